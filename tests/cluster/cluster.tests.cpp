// The cluster suite (issue 15): a fleet and its producers on a three-node RabbitMQ cluster
// (the "cluster" fixture), [broker] url naming all three nodes, the task queue a quorum queue
// replicated on them. A node of the queue is killed or restarted while producers submit and the
// fleet drains; every scenario ends with the fault suite's closing audit: every task terminal,
// lost 0, stuck 0, duplicate outcomes 0, queue empty, no log holding the broker password.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "cluster/cluster.h"
#include "fault/load.h"
#include "util/clock.h"

using namespace sqlq;
using namespace sqlq::test;
using namespace sqlq::fault;
using namespace sqlq::cluster;

namespace {

constexpr int kDrainMs = 300000;

}  // namespace

TEST_CASE("the queue's leader node SIGKILLed while producers submit and the fleet drains: every task ends once",
          "[cluster][kill]") {
    Cluster c;
    c.all_up();
    Env env(cluster_setup(c, 4));
    Fleet fleet(env);
    REQUIRE(fleet.start_result.code == 0);
    const std::string queue = env.cfg().broker.queue;
    auto leader = c.leader(queue);
    REQUIRE(leader);
    // Every client tries the nodes in the configured order: they are all on node 1, which
    // declared the queue and so leads it; killing the leader also takes every client's node.
    std::cout << "queue " << queue << " led by " << c.name(*leader) << "; " << consumers_on(env, c.port(*leader))
              << " workers consuming on it" << std::endl;
    const size_t before_elsewhere = [&] {
        size_t n = 0;
        for (size_t i = 0; i < c.size(); ++i)
            if (i != *leader) n += consumers_on(env, c.port(i));
        return n;
    }();

    Producer producer(env, 25, 48);
    REQUIRE(eventually([&] { return counts(env).terminal >= 100; }, 120000));
    const int chunks_before = producer.chunks();
    const int64_t killed_at = mono_ms();
    c.kill(*leader);
    const auto mid = counts(env);
    std::cout << "killed " << c.name(*leader) << " after " << chunks_before << " submits, " << mid.terminal
              << " tasks done, " << mid.running << " running" << std::endl;
    // A figure, not a verdict: how long until the fleet is finishing tasks again (a dozen beyond
    // those the workers held at the kill).
    if (eventually([&] { return counts(env).terminal >= mid.terminal + mid.running + 12; }, 120000))
        std::cout << "tasks finishing again " << (mono_ms() - killed_at) << " ms after the kill" << std::endl;
    producer.after(6);  // submits after the kill: they must find another node
    producer.finish();
    INFO("last failed submit: " << producer.last_bad());
    CHECK(producer.bad() == 0);
    CHECK(producer.chunks() > chunks_before);
    if (producer.unconfirmed() > 0)
        std::cout << producer.unconfirmed() << " submits left tasks to the sweeper: " << producer.last_problem();

    REQUIRE(drained(env, kDrainMs));
    auto a = closing_audit(env, "cluster 1 queue leader SIGKILLed");
    CHECK(a["submitted"] == producer.submitted());
    CHECK(a["succeeded"] == producer.submitted());
    // A new leader on a surviving node; the workers went on consuming elsewhere.
    auto now_leads = c.leader(queue);
    REQUIRE(now_leads);
    CHECK(*now_leads != *leader);
    size_t after_elsewhere = 0;
    for (size_t i = 0; i < c.size(); ++i)
        if (i != *leader) after_elsewhere += consumers_on(env, c.port(i));
    if (consumers_on(env, c.port(*leader)) > 0) CHECK(after_elsewhere > before_elsewhere);
    CHECK(fleet.status()["alive"] == 4);

    // The killed node comes back and rejoins; the queue has its three members again, the fleet
    // still works.
    c.all_up();
    auto id = submit(env, "SELECT 7");
    CHECK(fault::cli(env, {"wait", std::to_string(id)}).code == 0);
}

TEST_CASE("a node of the queue restarted while producers submit and the fleet drains: every task ends once",
          "[cluster][restart]") {
    Cluster c;
    c.all_up();
    Env env(cluster_setup(c, 4));
    Fleet fleet(env);
    REQUIRE(fleet.start_result.code == 0);
    const std::string queue = env.cfg().broker.queue;
    auto leader = c.leader(queue);
    REQUIRE(leader);
    Producer producer(env, 25, 48);
    REQUIRE(eventually([&] { return counts(env).terminal >= 100; }, 120000));
    const int chunks_before = producer.chunks();
    // The node the clients are on and the queue's leader: a polite stop closes every client's
    // connection (CONNECTION_FORCED) and hands the leadership over.
    const int64_t t0 = mono_ms();
    c.stop(*leader);
    producer.after(4);  // submits while the node is down
    c.start(*leader);
    std::cout << c.name(*leader) << " restarted in " << (mono_ms() - t0) << " ms, after " << chunks_before
              << " submits" << std::endl;
    producer.after(4);  // and after it is back
    producer.finish();
    INFO("last failed submit: " << producer.last_bad());
    CHECK(producer.bad() == 0);
    CHECK(producer.chunks() > chunks_before);

    REQUIRE(drained(env, kDrainMs));
    auto a = closing_audit(env, "cluster 2 queue node restarted");
    CHECK(a["submitted"] == producer.submitted());
    CHECK(a["succeeded"] == producer.submitted());
    CHECK(fleet.status()["alive"] == 4);
    // The restarted node is back among the queue's members.
    auto members = c.ctl(*leader, {"list_queues", "name", "members", "--no-table-headers"});
    CHECK(members.out.find(c.name(*leader)) != std::string::npos);
}
