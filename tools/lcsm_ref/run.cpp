// `run`: lcsm's CPU backend (or its CUDA backend, --device cuda) on each problem, timed warm, judged
// as `check` judges a port.
#include <cstdio>
#include <iostream>
#include <string>

#include "commands.hpp"
#include "cpu_run.hpp"
#include "cuda_run.hpp"
#include "error.hpp"
#include "judge.hpp"

namespace lcsm::ref {

#ifndef LCSM_REF_CUDA
std::string cuda_device_name() {
  fail("--device cuda: this lcsm-ref was built without CUDA (configure with a CUDA compiler and LCSM_ENABLE_CUDA)");
}
std::string cuda_lacks(const Descriptor&) { return "this lcsm-ref was built without CUDA"; }
std::vector<Tensor64> run_cuda(const Problem&, Stopwatch&) { fail("--device cuda: built without CUDA"); }
#endif

int run_command(const std::vector<Descriptor>& problems, int threads, int repeats, bool cuda) {
  int passed = 0, failed = 0, skipped = 0;
  const std::string device = cuda ? "lcsm cuda (" + cuda_device_name() + ")" : "";
  for (const Descriptor& d : problems) {
    // A batch on CUDA skips what the backend lacks (said per problem); one problem is an error.
    if (cuda && problems.size() > 1 && !cuda_lacks(d).empty()) {
      std::printf("%s: skipped (%s)\n", d.text().c_str(), cuda_lacks(d).c_str());
      ++skipped;
      continue;
    }
    const Problem problem = make_problem(d);
    Stopwatch watch(repeats);
    const std::vector<Tensor64> got = cuda ? run_cuda(problem, watch) : run_cpu(problem, threads, watch);
    std::vector<Row> rows;
    bool ok = true;
    for (std::size_t i = 0; i < got.size(); ++i) {
      rows.push_back(judge_output(problem.outputs[i], got[i].values, storage_name(got[i].storage)));
      ok &= rows.back().ok;
    }
    const double seconds = watch.median();
    const double tokens = static_cast<double>(d.B * d.T);
    const std::string where =
        cuda ? device : "lcsm cpu, " + std::to_string(threads) + (threads == 1 ? " thread" : " threads");
    std::printf("%s: %s\n  %s: %.3f ms (median of %d warm calls), %.3g tokens/s\n", d.text().c_str(),
                ok ? "pass" : "FAIL", where.c_str(), seconds * 1e3, watch.repeats(),
                seconds > 0 ? tokens / seconds : 0.0);
    std::fflush(stdout);
    print_table(std::cout, rows);
    std::cout.flush();
    ++(ok ? passed : failed);
  }
  if (skipped) std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  else std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

}  // namespace lcsm::ref
