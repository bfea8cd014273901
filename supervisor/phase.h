#pragma once
// The supervisor's own phase, shown by `status` ("phase"):
//
//   starting ──every worker ready──▶ running
//       │                               │
//       └──── stop (request, signal, ───┴──▶ stopping   (final: the loop ends once every
//             failed background start)                   worker is reaped)
//
// Supervisor::enter() is the only place the phase changes, and it goes through can_enter().
namespace sqlq::supervisor {

enum class Phase { starting, running, stopping };

constexpr const char* to_string(Phase p) {
    switch (p) {
    case Phase::starting: return "starting";
    case Phase::running: return "running";
    case Phase::stopping: return "stopping";
    }
    return "?";
}

// True for the arrows drawn above; false for anything else (a bug, logged by the caller).
constexpr bool can_enter(Phase from, Phase to) {
    switch (from) {
    case Phase::starting: return to == Phase::running || to == Phase::stopping;
    case Phase::running: return to == Phase::stopping;
    case Phase::stopping: return false;
    }
    return false;
}

}  // namespace sqlq::supervisor
