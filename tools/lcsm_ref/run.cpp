// `run`: lcsm's CPU backend on each problem, timed warm, judged as `check` judges a port.
#include <cstdio>
#include <iostream>

#include "commands.hpp"
#include "cpu_run.hpp"
#include "judge.hpp"

namespace lcsm::ref {

int run_command(const std::vector<Descriptor>& problems, int threads, int repeats) {
  int passed = 0, failed = 0;
  for (const Descriptor& d : problems) {
    const Problem problem = make_problem(d);
    Stopwatch watch(repeats);
    const std::vector<Tensor64> got = run_cpu(problem, threads, watch);
    std::vector<Row> rows;
    bool ok = true;
    for (std::size_t i = 0; i < got.size(); ++i) {
      rows.push_back(judge_output(problem.outputs[i], got[i].values, storage_name(got[i].storage)));
      ok &= rows.back().ok;
    }
    const double seconds = watch.median();
    const double tokens = static_cast<double>(d.B * d.T);
    std::printf("%s: %s\n  lcsm cpu, %d thread%s: %.3f ms (median of %d warm calls), %.3g tokens/s\n", d.text().c_str(),
                ok ? "pass" : "FAIL", threads, threads == 1 ? "" : "s", seconds * 1e3, watch.repeats(),
                seconds > 0 ? tokens / seconds : 0.0);
    std::fflush(stdout);
    print_table(std::cout, rows);
    std::cout.flush();
    ++(ok ? passed : failed);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

}  // namespace lcsm::ref
