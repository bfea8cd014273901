// libpq, loaded the first time it is used (dlopen) instead of at the start of every process. A
// worker on a SQLite target and store never maps it, nor the twenty-odd libraries it pulls in
// (OpenSSL, GnuTLS, Kerberos, LDAP, SASL): their relocated data alone cost every process about
// 0.9 MB of private memory, most of an idle worker's (docs/performance.md, "Idle memory"). The
// same reason rabbitmq-c is linked statically (common/CMakeLists.txt).
//
// Every libpq function that sqlq calls is defined here, under its own name and with the
// prototype of <libpq-fe.h> (so the compiler checks each definition against the header), and
// forwards to the library's own, found with dlsym on the library's handle. A function missing
// here is a link error, not a silent fallback. The executable does not export these names (no
// -rdynamic), so libpq's calls among its own functions stay inside libpq.
#include <dlfcn.h>
#include <string>

#include <libpq-fe.h>

#include "util/error.h"

namespace sqlq::pg {
namespace {

constexpr const char* kLibrary = "libpq.so.5";

void* library() {
    // A failed load throws and is tried again at the next call (a static's initialisation is
    // retried when it throws).
    static void* const handle = [] {
        void* h = ::dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char* why = ::dlerror();
            throw Error(std::string("cannot load the PostgreSQL client library ") + kLibrary + " (package libpq5): " +
                        (why ? why : "unknown error"));
        }
        return h;
    }();
    return handle;
}

void* symbol(const char* name) {
    void* f = ::dlsym(library(), name);
    if (!f) throw Error(std::string("the PostgreSQL client library ") + kLibrary + " has no " + name);
    return f;
}

}  // namespace
}  // namespace sqlq::pg

// One forwarding definition. `real` is looked up once (a function-local static).
#define SQLQ_LIBPQ(ret, name, params, args)                                                     \
    extern "C" ret name params {                                                                \
        static const auto real = reinterpret_cast<decltype(&::name)>(sqlq::pg::symbol(#name)); \
        return real args;                                                                       \
    }

SQLQ_LIBPQ(PGconn*, PQconnectdb, (const char* conninfo), (conninfo))
SQLQ_LIBPQ(PGconn*, PQconnectStartParams, (const char* const* keywords, const char* const* values, int expand),
           (keywords, values, expand))
SQLQ_LIBPQ(PostgresPollingStatusType, PQconnectPoll, (PGconn* conn), (conn))
SQLQ_LIBPQ(void, PQfinish, (PGconn* conn), (conn))
SQLQ_LIBPQ(ConnStatusType, PQstatus, (const PGconn* conn), (conn))
SQLQ_LIBPQ(PGTransactionStatusType, PQtransactionStatus, (const PGconn* conn), (conn))
SQLQ_LIBPQ(char*, PQerrorMessage, (const PGconn* conn), (conn))
SQLQ_LIBPQ(int, PQsocket, (const PGconn* conn), (conn))
SQLQ_LIBPQ(PQnoticeProcessor, PQsetNoticeProcessor, (PGconn* conn, PQnoticeProcessor proc, void* arg),
           (conn, proc, arg))
SQLQ_LIBPQ(PQconninfoOption*, PQconninfoParse, (const char* conninfo, char** errmsg), (conninfo, errmsg))
SQLQ_LIBPQ(void, PQconninfoFree, (PQconninfoOption* options), (options))
SQLQ_LIBPQ(PGcancel*, PQgetCancel, (PGconn* conn), (conn))
SQLQ_LIBPQ(void, PQfreeCancel, (PGcancel* cancel), (cancel))
SQLQ_LIBPQ(int, PQcancel, (PGcancel* cancel, char* errbuf, int errbufsize), (cancel, errbuf, errbufsize))
SQLQ_LIBPQ(PGresult*, PQexec, (PGconn* conn, const char* query), (conn, query))
SQLQ_LIBPQ(PGresult*, PQprepare,
           (PGconn* conn, const char* stmtName, const char* query, int nParams, const Oid* paramTypes),
           (conn, stmtName, query, nParams, paramTypes))
SQLQ_LIBPQ(PGresult*, PQexecPrepared,
           (PGconn* conn, const char* stmtName, int nParams, const char* const* paramValues, const int* paramLengths,
            const int* paramFormats, int resultFormat),
           (conn, stmtName, nParams, paramValues, paramLengths, paramFormats, resultFormat))
SQLQ_LIBPQ(int, PQsendQueryParams,
           (PGconn* conn, const char* command, int nParams, const Oid* paramTypes, const char* const* paramValues,
            const int* paramLengths, const int* paramFormats, int resultFormat),
           (conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats, resultFormat))
SQLQ_LIBPQ(int, PQsetSingleRowMode, (PGconn* conn), (conn))
SQLQ_LIBPQ(int, PQconsumeInput, (PGconn* conn), (conn))
SQLQ_LIBPQ(int, PQisBusy, (PGconn* conn), (conn))
SQLQ_LIBPQ(PGresult*, PQgetResult, (PGconn* conn), (conn))
SQLQ_LIBPQ(PGnotify*, PQnotifies, (PGconn* conn), (conn))
SQLQ_LIBPQ(void, PQfreemem, (void* ptr), (ptr))
SQLQ_LIBPQ(ExecStatusType, PQresultStatus, (const PGresult* res), (res))
SQLQ_LIBPQ(char*, PQresultErrorMessage, (const PGresult* res), (res))
SQLQ_LIBPQ(char*, PQresultErrorField, (const PGresult* res, int fieldcode), (res, fieldcode))
SQLQ_LIBPQ(int, PQntuples, (const PGresult* res), (res))
SQLQ_LIBPQ(int, PQnfields, (const PGresult* res), (res))
SQLQ_LIBPQ(char*, PQfname, (const PGresult* res, int field_num), (res, field_num))
SQLQ_LIBPQ(Oid, PQftype, (const PGresult* res, int field_num), (res, field_num))
SQLQ_LIBPQ(char*, PQgetvalue, (const PGresult* res, int tup_num, int field_num), (res, tup_num, field_num))
SQLQ_LIBPQ(int, PQgetlength, (const PGresult* res, int tup_num, int field_num), (res, tup_num, field_num))
SQLQ_LIBPQ(int, PQgetisnull, (const PGresult* res, int tup_num, int field_num), (res, tup_num, field_num))
SQLQ_LIBPQ(void, PQclear, (PGresult* res), (res))
