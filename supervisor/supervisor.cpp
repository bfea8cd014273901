#include "supervisor/supervisor.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "util/clock.h"
#include "util/control.h"
#include "util/error.h"
#include "util/files.h"
#include "util/process.h"
#include "supervisor/launch.h"
#include "supervisor/status.h"

namespace sqlq::supervisor {

namespace asio = boost::asio;
Policy policy_from(const Config& cfg) {
    const SupervisorConfig& c = cfg.supervisor;
    Policy p;
    p.stop_timeout_ms = c.stop_timeout_ms;
    p.watchdog_ms = c.watchdog_ms;
    p.cancel_grace_ms = c.cancel_grace_ms;
    p.task_deadline_ms = cfg.query.timeout_ms + c.deadline_grace_ms;
    p.deadline_grace_ms = c.deadline_grace_ms;
    p.max_tasks_per_worker = c.max_tasks_per_worker;
    p.max_worker_rss_mb = c.max_worker_rss_mb;
    p.failed_start_ms = c.failed_start_ms;
    p.failed_starts_before_backoff = c.failed_starts_before_backoff;
    p.backoff_initial_ms = c.backoff_initial_ms;
    p.backoff_max_ms = c.backoff_max_ms;
    return p;
}

Keeper::Policy web_policy_from(const Config& cfg) {
    const SupervisorConfig& c = cfg.supervisor;
    Keeper::Policy p;
    p.stop_timeout_ms = c.stop_timeout_ms;
    p.failed_start_ms = c.failed_start_ms;
    p.backoff_initial_ms = c.backoff_initial_ms;
    p.backoff_max_ms = c.backoff_max_ms;
    return p;
}

// One child process's pipes: a worker's, or sqlq-web's (slot 0, no status pipe). Handlers hold
// it by shared_ptr, so it lives until both pipes are at EOF, which may be after the process was
// reaped.
struct Supervisor::Child {
    Child(asio::io_context& io, int slot_, uint64_t generation_, pid_t pid_, int status_fd, int output_fd)
        : slot(slot_), generation(generation_), pid(pid_), output(io, output_fd) {
        if (status_fd >= 0) status.emplace(io, status_fd);
    }
    int slot;
    uint64_t generation;
    pid_t pid;
    std::optional<asio::posix::stream_descriptor> status;
    asio::posix::stream_descriptor output;
    std::array<char, 1024> status_chunk{};
    std::array<char, 4096> output_chunk{};
    std::string status_buf, output_buf;
};

Supervisor::Supervisor(const Config& cfg, RunOptions opts)
    : cfg_(cfg),
      opts_(std::move(opts)),
      signals_(io_),
      timer_(io_),
      start_timer_(io_),
      control_(io_, control_socket_path(cfg.supervisor.run_dir),
               [this](const control::Request& r) {
                   std::string reply = handle(r);
                   after_event();
                   return reply;
               }),
      fleet_(policy_from(cfg), *this, *this),
      web_("sqlq-web", web_policy_from(cfg), web_spawner_, *this),
      sweeper_(cfg, [this](std::function<void()> f) { asio::post(io_, std::move(f)); }),
      metrics_(io_, [this] { return render_metrics(); }) {
    pthread_sigmask(SIG_SETMASK, nullptr, &original_mask_);
    // Worker output is logged as the worker wrote it (it carries its own time and name). Its
    // own sink: a pattern belongs to a sink, and the supervisor's lines keep theirs. Both flush
    // every line, so the lines of the two never mix.
    if (opts_.log_file.empty()) raw_ = std::make_shared<spdlog::logger>("worker-output", std::make_shared<spdlog::sinks::stderr_sink_st>());
    else {
        create_private_file(opts_.log_file);  // workers' lines name tasks and errors: private
        raw_ = std::make_shared<spdlog::logger>("worker-output", std::make_shared<spdlog::sinks::basic_file_sink_st>(opts_.log_file));
    }
    raw_->set_pattern("%v");
    raw_->flush_on(spdlog::level::trace);
    fleet_.on_task_lost([this](const Fleet::LostTask& t) {
        Owner o;
        o.host = host_name();
        o.pid = t.pid;
        o.start = static_cast<int64_t>(t.start_time);
        sweeper_.owner_lost(t.task, o, t.why, t.fail ? Sweeper::Lost::fail_task : Sweeper::Lost::may_rerun);
    });
    sweeper_.on_swept([this](const Sweeper::Swept& s) {
        hand_fleet_view();
        sweep_figures_ = s.figures;
        task_metrics_.finished_by_sweeper(Status::failed, s.failed);
        task_metrics_.finished_by_sweeper(Status::cancelled, s.cancelled);
    });
}

Supervisor::~Supervisor() = default;

int64_t Supervisor::now_ms() { return mono_ms(); }

void Supervisor::hand_fleet_view() {
    // What the sweeper's next record of this fleet in the store lists (sqlq workers).
    sweeper_.fleet_view(status_json(Identity{}, fleet_, mono_ms())["workers"].dump());
}

namespace {
// The fleet keeps two pipes open per worker (its status and its output) beside a few dozen
// descriptors of its own: under systemd's default soft limit of 1,024 open files the 500th
// worker could not be started. Raises the soft limit to the hard one (as a server does), and says
// when even that is short for `workers`.
void raise_open_files_limit(int workers) {
    rlimit l{};
    if (::getrlimit(RLIMIT_NOFILE, &l) != 0) return;
    if (l.rlim_cur < l.rlim_max) {
        rlimit raised = l;
        raised.rlim_cur = l.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) l = raised;
    }
    const rlim_t needed = rlim_t(workers) * 2 + 64;
    if (l.rlim_cur != RLIM_INFINITY && l.rlim_cur < needed)
        spdlog::warn("open files: the limit is {} and {} workers need about {}: raise it (LimitNOFILE= in the "
                     "systemd unit, or ulimit -n)",
                     l.rlim_cur, workers, needed);
}
}  // namespace

int Supervisor::run() {
    raise_open_files_limit(cfg_.supervisor.workers);
    started_ms_ = mono_ms();
    started_wall_s_ = double(StoreDeps::wall_clock()) / 1000.0;
    // First: a metrics address that cannot be bound fails the start before anything else exists.
    if (!cfg_.supervisor.metrics_listen.empty()) {
        std::string problem;
        auto where = parse_listen_address(cfg_.supervisor.metrics_listen, problem);
        if (!where) throw Error("[supervisor] metrics_listen: " + problem, kExitUsage);
        metrics_.listen(*where);
    }
    // Before the first fork: a SIGCHLD must never arrive before we listen for it.
    signals_.add(SIGCHLD);
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.add(SIGHUP);
    // Caught and dropped, so that a write to a reader that went away (the `start` that waits
    // on the ready pipe, a closed stderr) fails with EPIPE instead of killing the fleet.
    signals_.add(SIGPIPE);
    wait_signals();
    control_.listen();
    hand_fleet_view();
    sweeper_.start();
    spdlog::info("starting {} workers ({}), pid {}, broker {}, run dir {}", cfg_.supervisor.workers, opts_.worker,
                 ::getpid(), redact_urls(cfg_.broker.urls), cfg_.supervisor.run_dir);
    set_target(cfg_.supervisor.workers);
    // sqlq-web is not part of the start's "ready": a console that cannot bind shows in status
    // (and in the log) and is retried with a backoff, while the fleet serves `sqlq` meanwhile.
    if (cfg_.web.enabled) web_.set_wanted(true);
    start_timer_.expires_after(std::chrono::milliseconds(cfg_.supervisor.start_timeout_ms));
    start_timer_.async_wait([this](boost::system::error_code ec) {
        if (ec || phase_ != Phase::starting) return;
        // At most ten slots by name: with hundreds of workers behind a broker that stopped
        // accepting connections, the whole list would be a line of kilobytes.
        std::string waiting, words;
        int late = 0;
        for (const auto& s : fleet_.slots()) {
            if (!s.wanted || s.state == SlotState::ready || s.state == SlotState::busy) continue;
            if (++late <= 10) waiting += (waiting.empty() ? "" : ", ") + std::to_string(s.number) + " " + to_string(s.state);
            if (words.empty() && !s.last_words.empty())
                words = "; slot " + std::to_string(s.number) + " said: " + s.last_words;
        }
        if (late > 10) waiting += " and " + std::to_string(late - 10) + " more";
        startup_done(StartOutcome::failed, "not every worker was ready within start_timeout_ms " +
                                std::to_string(cfg_.supervisor.start_timeout_ms) + " (slots " + waiting + ")" + words);
    });
    after_event();
    io_.run();
    sweeper_.stop();
    return exit_code_;
}

void Supervisor::set_target(int workers) {
    // Every worker this forks waits before its exec until the last one is forked (StartGate).
    StartGate gate;
    batch_gate_ = &gate;
    // Forgotten before the gate opens, even when set_target throws: no spawn may use it after.
    struct Forget {
        const StartGate*& gate;
        ~Forget() { gate = nullptr; }
    } forget{batch_gate_};
    fleet_.set_target(workers);
}

// --- Spawner ---

Spawned Supervisor::spawn(int slot, uint64_t generation) {
    Launched l = launch_worker(opts_.worker, cfg_.file, slot, original_mask_, batch_gate_);
    auto c = std::make_shared<Child>(io_, slot, generation, l.pid, l.status_fd, l.output_fd);
    children_[l.pid] = c;
    read_status(c);
    read_output(c);
    return {l.pid, process_start_time(l.pid)};
}

void Supervisor::signal(pid_t pid, int sig) {
    // Only ever a pid we have not reaped yet (the Fleet clears it on exit), so it is ours.
    if (pid > 0 && ::kill(pid, sig) != 0 && errno != ESRCH)
        spdlog::error("pid {}: cannot send signal {}: {}", pid, sig, std::strerror(errno));
}

Spawned Supervisor::WebSpawner::spawn(int, uint64_t generation) {
    if (sup.opts_.web.empty()) throw Error("no sqlq-web binary was found at start; restart the supervisor");
    Launched l = launch({sup.opts_.web, "-c", sup.cfg_.file}, sup.original_mask_, StatusPipe::no);
    auto c = std::make_shared<Child>(sup.io_, 0, generation, l.pid, -1, l.output_fd);
    sup.children_[l.pid] = c;
    sup.read_output(c);
    return {l.pid, process_start_time(l.pid)};
}

int64_t Supervisor::rss_mb(pid_t pid) { return static_cast<int64_t>(process_memory(pid).rss_kib / 1024); }

// --- signals and reaping ---

void Supervisor::wait_signals() {
    signals_.async_wait([this](boost::system::error_code ec, int sig) {
        if (ec) return;
        switch (sig) {
        case SIGCHLD: reap(); break;
        case SIGTERM:
        case SIGINT:
            if (phase_ == Phase::stopping) {
                spdlog::warn("{} again: killing every worker now", sigabbrev_np(sig));
                fleet_.kill_all();
                web_.kill();
            } else {
                begin_stop(std::string("SIG") + sigabbrev_np(sig));
            }
            break;
        case SIGHUP: reload(); break;
        case SIGPIPE: break;
        }
        after_event();
        wait_signals();
    });
}

// The only waitpid in the program. Signals coalesce, so one SIGCHLD may stand for many exits:
// loop until nothing is left.
void Supervisor::reap() {
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid == 0) return;
        if (pid < 0) {
            if (errno == EINTR) continue;
            if (errno != ECHILD) spdlog::error("waitpid: {}", std::strerror(errno));
            return;
        }
        auto it = children_.find(pid);
        if (it != children_.end()) {
            // The process is gone, so all it wrote is in the pipe: read it before the exit, so a
            // last "busy 42" is not lost (it decides owner_lost).
            if (it->second->status) drain_status(*it->second);
            children_.erase(it);
        }
        if (!fleet_.exited(pid, status) && !web_.exited(pid, status))
            spdlog::warn("reaped pid {} ({}), which is no child of ours", pid, describe_wait_status(status));
    }
}

// --- worker pipes ---

void Supervisor::read_status(std::shared_ptr<Child> c) {
    c->status->async_read_some(asio::buffer(c->status_chunk), [this, c](boost::system::error_code ec, size_t n) {
        if (ec) return;  // EOF: the process is gone (its exit comes through reap)
        c->status_buf.append(c->status_chunk.data(), n);
        feed_status(*c);
        after_event();
        read_status(c);
    });
}

void Supervisor::drain_status(Child& c) {
    for (;;) {
        ssize_t n = ::read(c.status->native_handle(), c.status_chunk.data(), c.status_chunk.size());
        if (n > 0) {
            c.status_buf.append(c.status_chunk.data(), static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    feed_status(c);
}

void Supervisor::feed_status(Child& c) {
    size_t nl;
    while ((nl = c.status_buf.find('\n')) != std::string::npos) {
        std::string line = c.status_buf.substr(0, nl);
        c.status_buf.erase(0, nl + 1);
        if (auto r = parse_report(line)) {
            // Counted whatever the generation: a dead worker's last outcome is still an outcome.
            if (r->what == Report::done) task_metrics_.finished(*r);
            fleet_.report(c.slot, c.generation, *r);
        } else spdlog::warn("slot {} pid {}: unknown status line \"{}\"", c.slot, c.pid, line.substr(0, 80));
    }
    if (c.status_buf.size() > 4096) c.status_buf.clear();  // no newline in sight: garbage
}

void Supervisor::read_output(std::shared_ptr<Child> c) {
    c->output.async_read_some(asio::buffer(c->output_chunk), [this, c](boost::system::error_code ec, size_t n) {
        if (!ec) c->output_buf.append(c->output_chunk.data(), n);
        size_t nl;
        // A line without its newline at EOF is still a line; an endless one is cut at 8 KiB.
        while ((nl = c->output_buf.find('\n')) != std::string::npos || (ec && !c->output_buf.empty()) ||
               c->output_buf.size() > 8192) {
            size_t len = nl == std::string::npos ? std::min<size_t>(c->output_buf.size(), 8192) : nl;
            std::string line = c->output_buf.substr(0, len);
            c->output_buf.erase(0, nl == std::string::npos ? len : nl + 1);
            if (line.empty()) continue;
            raw_->info("{}", line);
            if (c->slot == 0) {
                // Kept after its exit too: why it failed to start is often its last line.
                if (web_.generation() == c->generation)
                    web_.set_last_words(line.size() > 300 ? line.substr(0, 300) : line);
                continue;
            }
            Slot* s = fleet_.find(c->slot);
            if (s && s->generation == c->generation) {
                // Kept for status and the start error: the line without the worker's timestamp.
                auto sp = line.find(' ');
                s->last_words = line.size() > 24 && sp == 23 ? line.substr(24) : line;
                if (s->last_words.size() > 300) s->last_words.resize(300);
            }
        }
        if (!ec) read_output(c);
    });
}

// --- after every event ---

void Supervisor::after_event() {
    if (phase_ == Phase::starting) {
        if (fleet_.all_ready()) {
            startup_done(StartOutcome::ready, "");
        } else if (!opts_.foreground) {
            // In the background a slot in backoff fails the start: the operator is waiting for
            // an answer, and the reason is known now. In the foreground it keeps retrying.
            for (const auto& s : fleet_.slots()) {
                if (s.wanted && s.state == SlotState::backoff) {
                    startup_done(StartOutcome::failed, "slot " + std::to_string(s.number) + ": the worker failed to start " +
                                            std::to_string(s.failed_starts) + " times in a row (last " + s.last_exit +
                                            (s.last_words.empty() ? "" : ": " + s.last_words) + ")");
                    break;
                }
            }
        }
    }
    if (fleet_.done() && web_.done()) {
        finish();
        return;
    }
    arm_timer();
}

void Supervisor::arm_timer() {
    // After every event, so neither a walk of the slot table (wake_at() is kept without one)
    // nor a timerfd_settime when the time did not change (most events: "alive" lines).
    int64_t next = fleet_.wake_at();
    if (int64_t w = web_.next_deadline(); w != 0 && (next == 0 || w < next)) next = w;
    if (next == timer_at_) return;
    timer_at_ = next;
    if (next == 0) {
        timer_.cancel();
        return;
    }
    timer_.expires_after(std::chrono::milliseconds(std::max<int64_t>(0, next - mono_ms())));
    timer_.async_wait([this](boost::system::error_code ec) {
        if (ec) return;  // re-armed or cancelled
        timer_at_ = 0;   // fired: whatever comes next is armed anew
        fleet_.tick();
        web_.tick();
        after_event();
    });
}

void Supervisor::startup_done(StartOutcome outcome, const std::string& why) {
    if (phase_ != Phase::starting) return;
    start_timer_.cancel();
    const bool ok = outcome == StartOutcome::ready;
    std::string msg;
    if (ok) {
        enter(Phase::running);
        spdlog::info("all {} workers ready in {} ms", fleet_.target(), mono_ms() - started_ms_);
        // The view the next sweep records (sqlq workers): the fleet as started, not as it was
        // before its first worker (later sweeps refresh it).
        hand_fleet_view();
        msg = "ok " + std::to_string(::getpid()) + "\n";
    } else {
        spdlog::error("start failed: {}", why);
        msg = "error " + why + "\n";
    }
    if (opts_.ready_fd >= 0) {
        ssize_t n = ::write(opts_.ready_fd, msg.data(), msg.size());
        (void)n;  // the waiting parent may be gone: nothing to do about it
        ::close(opts_.ready_fd);
        opts_.ready_fd = -1;
    }
    if (!ok && !opts_.foreground) {
        exit_code_ = kExitError;
        begin_stop("start failed");
    }
}

bool Supervisor::enter(Phase next) {
    if (!can_enter(phase_, next)) {
        spdlog::error("BUG: phase {} → {} (ignored)", to_string(phase_), to_string(next));
        return false;
    }
    phase_ = next;
    return true;
}

void Supervisor::begin_stop(const std::string& why) {
    if (phase_ == Phase::stopping) return;
    enter(Phase::stopping);
    start_timer_.cancel();
    spdlog::info("stopping ({}): {} workers, stop_timeout_ms {}", why, fleet_.alive(), cfg_.supervisor.stop_timeout_ms);
    fleet_.stop();
    web_.stop();
}

void Supervisor::finish() {
    spdlog::info("stopped");
    control_.close();
    metrics_.close();
    boost::system::error_code ignored;
    signals_.cancel(ignored);
    timer_.cancel();
    start_timer_.cancel();
    io_.stop();
}

std::string Supervisor::reload() {
    Config fresh;
    try {
        fresh = load_config(cfg_.file);
    } catch (const Error& e) {
        spdlog::error("reload refused, keeping the running config: {}", e.what());
        return e.what();
    }
    if (fresh.supervisor.run_dir != cfg_.supervisor.run_dir)
        spdlog::warn("reload: run_dir changed to {}; this needs a stop and a start", fresh.supervisor.run_dir);
    fresh.supervisor.run_dir = cfg_.supervisor.run_dir;
    if (fresh.supervisor.metrics_listen != cfg_.supervisor.metrics_listen)
        spdlog::warn("reload: metrics_listen changed to \"{}\"; this needs a stop and a start (still serving \"{}\")",
                     fresh.supervisor.metrics_listen, cfg_.supervisor.metrics_listen);
    fresh.supervisor.metrics_listen = cfg_.supervisor.metrics_listen;
    const int before = fleet_.target();
    cfg_ = fresh;
    fleet_.set_policy(policy_from(cfg_));
    web_.set_policy(web_policy_from(cfg_));
    sweeper_.update(cfg_);
    spdlog::info("reload: workers {} → {}", before, cfg_.supervisor.workers);
    if (phase_ != Phase::stopping) {
        set_target(cfg_.supervisor.workers);
        if (cfg_.web.enabled && opts_.web.empty()) {
            try {
                opts_.web = find_program("sqlq-web", "web");
            } catch (const Error& e) {
                spdlog::error("reload: [web] enabled, but {}", e.what());
            }
        }
        web_.set_wanted(cfg_.web.enabled && !opts_.web.empty());
    }
    return "";
}

// --- metrics ---

std::string Supervisor::render_metrics() {
    metrics::Info info;
    info.version = metrics::build_version();
    info.commit = metrics::build_commit();
    info.queue = cfg_.broker.queue;
    info.start_time_s = started_wall_s_;
    info.now_ms = mono_ms();
    if (cfg_.web.enabled || !web_.done()) {
        info.web_kept = true;
        info.web_up = web_.state() == Keeper::State::running;
        info.web_restarts = web_.restarts();
    }
    return metrics::exposition(metrics::collect(fleet_, task_metrics_, sweep_figures_, info));
}

// --- control requests ---

std::string Supervisor::handle(const control::Request& r) {
    switch (r.cmd) {
    case control::Command::status: {
        Identity id;
        id.pid = ::getpid();
        id.config = cfg_.file;
        id.run_dir = cfg_.supervisor.run_dir;
        id.broker = redact_urls(cfg_.broker.urls);
        id.phase = phase_;
        id.uptime_ms = mono_ms() - started_ms_;
        nlohmann::json st = status_json(id, fleet_, mono_ms());
        if (cfg_.web.enabled || !web_.done()) {
            st["web"] = web_.status_json(mono_ms());
            st["web"]["listen"] = cfg_.web.listen;
        }
        return control::status_reply(st);
    }
    case control::Command::stop:
        spdlog::info("control: stop");
        begin_stop("stop requested");
        return control::ok_reply();
    case control::Command::reload: {
        spdlog::info("control: reload");
        if (auto err = reload(); !err.empty()) return control::error_reply(err);
        return control::reload_reply(fleet_.target());
    }
    case control::Command::restart:
        spdlog::info("control: restart {}", r.slot ? "slot " + std::to_string(*r.slot) : std::string("all slots"));
        if (phase_ == Phase::stopping) return control::error_reply("stopping");
        if (!fleet_.restart(r.slot)) return control::error_reply("no slot " + std::to_string(r.slot.value_or(0)));
        return control::ok_reply();
    case control::Command::cancel: return control::cancel_reply(fleet_.cancel(r.task));
    }
    return control::error_reply("unhandled command");
}

}  // namespace sqlq::supervisor
