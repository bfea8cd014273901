// sqlq-worker: runs tasks from the queue, one at a time. See docs/architecture.md.
#include "worker/worker_main.h"

int main(int argc, char** argv) { return sqlq::worker_main(argc, argv); }
