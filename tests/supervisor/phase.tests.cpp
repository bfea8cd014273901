#include <catch2/catch.hpp>

#include "supervisor/phase.h"

using namespace sqlq::supervisor;

TEST_CASE("the supervisor's phase only moves forward: starting, running, stopping", "[supervisor][phase]") {
    CHECK(can_enter(Phase::starting, Phase::running));
    CHECK(can_enter(Phase::starting, Phase::stopping));
    CHECK(can_enter(Phase::running, Phase::stopping));

    CHECK_FALSE(can_enter(Phase::starting, Phase::starting));
    CHECK_FALSE(can_enter(Phase::running, Phase::starting));
    CHECK_FALSE(can_enter(Phase::running, Phase::running));
    CHECK_FALSE(can_enter(Phase::stopping, Phase::starting));
    CHECK_FALSE(can_enter(Phase::stopping, Phase::running));
    CHECK_FALSE(can_enter(Phase::stopping, Phase::stopping));
}

TEST_CASE("the phase is shown by the names docs/operations.md lists", "[supervisor][phase]") {
    CHECK(std::string(to_string(Phase::starting)) == "starting");
    CHECK(std::string(to_string(Phase::running)) == "running");
    CHECK(std::string(to_string(Phase::stopping)) == "stopping");
}
