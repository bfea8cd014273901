#pragma once
// libpq's handles, each with one owner: a connection (PQfinish), a result (PQclear), a cancel
// object (PQfreeCancel). Null-safe; put a handle into its owner before checking it.
#include <memory>

#include <libpq-fe.h>

namespace sqlq::pg {

struct FinishConn {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
struct ClearResult {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
struct FreeCancel {
    void operator()(PGcancel* c) const noexcept { PQfreeCancel(c); }
};
struct FreeConninfo {
    void operator()(PQconninfoOption* o) const noexcept { PQconninfoFree(o); }
};

using Conn = std::unique_ptr<PGconn, FinishConn>;
using Result = std::unique_ptr<PGresult, ClearResult>;
using Cancel = std::unique_ptr<PGcancel, FreeCancel>;
using Conninfo = std::unique_ptr<PQconninfoOption, FreeConninfo>;

}  // namespace sqlq::pg
