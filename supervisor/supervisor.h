#pragma once
// The supervisor's event loop: one io_context, one thread, handlers for
//   - signals (asio::signal_set only): SIGCHLD → reap(), SIGTERM/SIGINT → stop (a second one
//     kills), SIGHUP → reload, SIGPIPE → nothing (writes fail with EPIPE instead);
//   - each worker's status pipe (→ Fleet::report) and output pipe (→ the log);
//   - the control socket (control_server.h; requests in control/protocol.h);
//   - GET /metrics when [supervisor] metrics_listen is set (metrics_server.h, metrics.h);
//   - sqlq-web's output pipe when [web] enabled (the Keeper, keeper.h, decides its life);
//   - one timer, always armed at the earlier of Fleet::next_deadline() and Keeper::next_deadline().
// The Fleet and the Keeper decide; this class only carries events to them and their decisions to
// processes.
#include <csignal>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/logger.h>

#include "config/config.h"
#include "control/protocol.h"
#include "supervisor/control_server.h"
#include "supervisor/fleet.h"
#include "supervisor/keeper.h"
#include "supervisor/launch.h"
#include "supervisor/metrics.h"
#include "supervisor/metrics_server.h"
#include "supervisor/phase.h"
#include "supervisor/sweeper.h"

namespace sqlq::supervisor {

struct RunOptions {
    bool foreground = true;
    std::string worker;   // the worker binary (find_worker)
    std::string web;      // the sqlq-web binary (find_program), "" when [web] is not enabled
    int ready_fd = -1;    // background start: "ok PID\n" or "error WHY\n" is written here once
    std::string log_file; // where init_log() sends the log ("" for stderr); worker output goes there too
};

Policy policy_from(const Config& cfg);
Keeper::Policy web_policy_from(const Config& cfg);

class Supervisor : private Spawner, private Clock {
public:
    Supervisor(const Config& cfg, RunOptions opts);
    ~Supervisor() override;
    Supervisor(const Supervisor&) = delete;
    Supervisor& operator=(const Supervisor&) = delete;

    // Runs until stopped; returns the exit code (kExitError when a background start failed).
    int run();

private:
    struct Child;
    // Starts sqlq-web for the Keeper (its slot argument is unused).
    struct WebSpawner : Spawner {
        explicit WebSpawner(Supervisor& s) : sup(s) {}
        Spawned spawn(int slot, uint64_t generation) override;
        void signal(pid_t pid, int sig) override { sup.signal(pid, sig); }
        int64_t rss_mb(pid_t pid) override { return sup.rss_mb(pid); }
        Supervisor& sup;
    };

    // Spawner, Clock
    Spawned spawn(int slot, uint64_t generation) override;
    void signal(pid_t pid, int sig) override;
    int64_t rss_mb(pid_t pid) override;
    int64_t now_ms() override;
    void hand_fleet_view();  // the fleet's workers, for the sweeper's next record in the store
    // Fleet::set_target, its spawns held at a StartGate until the last one is forked.
    void set_target(int workers);

    void wait_signals();
    void reap();
    void read_status(std::shared_ptr<Child> c);
    void read_output(std::shared_ptr<Child> c);
    void feed_status(Child& c);
    void drain_status(Child& c);
    void after_event();
    void arm_timer();
    void begin_stop(const std::string& why);
    void finish();
    // The end of the start: every worker ready, or failed for `why`.
    enum class StartOutcome { ready, failed };
    void startup_done(StartOutcome outcome, const std::string& why);
    std::string reload();
    // The only place phase_ changes; false (and a logged bug) for an arrow phase.h does not draw.
    bool enter(Phase next);

    // A control request, answered with one reply line (control/protocol.h).
    std::string handle(const control::Request& r);
    // The body of GET /metrics.
    std::string render_metrics();

    Config cfg_;
    RunOptions opts_;
    sigset_t original_mask_{};
    boost::asio::io_context io_;
    boost::asio::signal_set signals_;
    boost::asio::steady_timer timer_;
    int64_t timer_at_ = 0;  // the mono_ms() timer_ is armed for (0: not armed)
    const StartGate* batch_gate_ = nullptr;  // set only inside set_target()
    boost::asio::steady_timer start_timer_;
    ControlServer control_;
    Fleet fleet_;
    WebSpawner web_spawner_{*this};
    Keeper web_;                             // sqlq-web, wanted while [web] enabled
    Sweeper sweeper_;
    metrics::TaskMetrics task_metrics_;      // from the workers' "done" lines and the sweeper
    metrics::SweepFigures sweep_figures_;    // the last sweep's, posted by the sweeper
    MetricsServer metrics_;
    double started_wall_s_ = 0;
    std::map<pid_t, std::shared_ptr<Child>> children_;  // live workers (erased when reaped)
    std::shared_ptr<spdlog::logger> raw_;               // worker output, as written
    Phase phase_ = Phase::starting;                     // changed only by enter()
    int64_t started_ms_ = 0;
    int exit_code_ = 0;
};

}  // namespace sqlq::supervisor
