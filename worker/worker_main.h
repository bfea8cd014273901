#pragma once
// The whole of sqlq-worker's main(): command line, signals, config, the worker loop, exit code.
// A library function so that a second binary can be the same worker with something added
// before it starts (the test suites' sqlq-test-worker registers fault-injection SQL functions).

namespace sqlq {

int worker_main(int argc, char** argv);

}  // namespace sqlq
