// CPU benchmarks of every lcsm::cpu operator (one file per operator in bench/cpu/), next to the
// two ceilings they are judged against, measured in the same process: Eigen's float GEMM rate and
// the memory-copy bandwidth. This file holds those ceilings and main().
//
//   ./build/bench/lcsm_bench_cpu                                  # all benchmarks, a table
//   ./build/bench/lcsm_bench_cpu --benchmark_format=json           # or --benchmark_out=x.json
//   ./build/bench/lcsm_bench_cpu --benchmark_filter='forward/H:16/T:16384'
//
// Counters, decimal units (k = 1000):
//   tokens_per_second  B * T per second (decode: B tokens per step)
//   flops              FLOP per second (the counts are below, next to each benchmark)
//   bytes_per_second   the fewest bytes: each input read once, each output written once
//   frac_gemm          flops / the 2-thread Eigen GEMM rate (see ReferenceRates)
//   frac_bw            bytes_per_second / the 2-thread copy bandwidth (decode)
//   frac_update        bytes_per_second / the 2-thread in-place update bandwidth (decode)
// Every benchmark times wall-clock (UseRealTime): the work runs on threads of its own.
#include "cpu/common.hpp"

namespace {

using namespace lcsm::bench;
// ---------------------------------------------------------------------------------------------
// The ceilings as benchmarks of their own. Their 2-thread runs also raise reference_rates() (see there).

// Eigen float GEMM 2048^3. Arg: concurrent copies (each single-threaded Eigen, its own matrices).
void BM_EigenGemm(benchmark::State& state) {
  const int copies = static_cast<int>(state.range(0));
  std::vector<std::unique_ptr<GemmOperands>> ops;
  for (int w = 0; w < copies; ++w) ops.push_back(std::make_unique<GemmOperands>(kGemmN, 7 + 2 * w));
  const Work work{0, copies * kGemmFlop, copies * 3.0 * kGemmN * kGemmN * 4};
  const double sec = timed(state, work, kGemm, [&] {
    concurrently(copies, [&](int w) { ops[w]->run(); });
    benchmark::DoNotOptimize(ops[0]->c.data());
  });
  ReferenceRates& ref = reference_rates();
  if (copies == kThreads) ref.gemm_flops = std::max(ref.gemm_flops, work.flop / sec);
  state.counters["ref_gemm_flops"] = ref.gemm_flops;
}

// A 256 MiB buffer copied (memcpy or streaming stores) or updated in place. Args: kind (0 memcpy,
// 1 streaming copy, 2 in-place update), threads. Bytes read + written.
void BM_MemCopy(benchmark::State& state) {
  const auto kind = static_cast<CopyKind>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  CopyBuffers buf(kCopyBytes);
  const Work work{0, 0, 2.0 * kCopyBytes};
  const double sec = timed(state, work, kBandwidth, [&] {
    buf.run(kind, threads);
    benchmark::DoNotOptimize(buf.dst.data());
    benchmark::ClobberMemory();
  });
  ReferenceRates& ref = reference_rates();
  if (threads == kThreads) {
    double& r = kind == CopyKind::update ? ref.update_bytes : ref.copy_bytes;
    r = std::max(r, work.bytes / sec);
  }
  state.counters["ref_copy_bytes"] = ref.copy_bytes;
  state.counters["ref_update_bytes"] = ref.update_bytes;
}

}  // namespace

BENCHMARK(BM_EigenGemm)->ArgName("copies")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MemCopy)
    ->ArgNames({"kind", "threads"})
    ->ArgsProduct({{0, 1, 2}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("lcsm_huge_pages", huge_pages() ? "madvise(MADV_HUGEPAGE)" : "off (4 KiB pages)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
