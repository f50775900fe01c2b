// lcsm demo: every operator the library has, on a real-sized input, timed and checked against the
// float64 reference: lightning attention forward, backward and decode; the scalar and vector gated
// recurrences and cosFormer forward and decode on the same q, k, v; TNN's Toeplitz convolution over
// C = 1024 channels of T tokens.
//
//   demo [--T 65536] [--threads 2] [--decode 1024] [--rows 64] [--seed 1]
//
// The problem is one MiniMax-01-like linear-attention layer: B = 1, H = 16 heads, K = V = 128,
// float32, MiniMax decays (layer 0 of 80), scale 1/sqrt(K). The float64 reference (a plain
// O(T K V) recurrence per head) runs on two sampled heads, the fastest- and the slowest-decaying,
// through H = 1 strided views into double copies of those heads; the error is the relative RMS
// error over randomly sampled rows (and over the whole final state). The exit status is non-zero
// when an error is above its bound.
//
// Each operator is one section: a function that takes the shared problem, runs the operator twice
// (a first call, then the timed warm call: see time_warm) and adds rows to the report; a line
// before each step says what the demo is doing. A backend (the CUDA one, say) adds its own sections.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "lcsm/lcsm.hpp"

namespace {

using lcsm::index_t;
using lcsm::View;

// ---------------------------------------------------------------------------------------------
// Options and the problem every section shares.

struct Options {
  index_t T = 65536;
  int threads = 2;
  index_t decode_steps = 1024;
  index_t rows = 64;  // sampled rows per sampled head
  std::uint64_t seed = 1;
};

[[noreturn]] void usage(const char* argv0, int status) {
  std::fprintf(status ? stderr : stdout,
               "usage: %s [--T tokens] [--threads N] [--decode steps] [--rows N] [--seed N]\n"
               "  --T        sequence length of the forward and backward passes (default 65536)\n"
               "  --threads  CPU threads (default 2)\n"
               "  --decode   decode steps, one token per call, after the prefill (default 1024)\n"
               "  --rows     rows per sampled head compared with the float64 reference (default 64)\n"
               "  --seed     seed of the random inputs and of the sampled rows (default 1)\n",
               argv0);
  std::exit(status);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") usage(argv[0], 0);
    std::string value;
    const auto eq = a.find('=');
    std::string name = a.substr(0, eq);
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::fprintf(stderr, "%s: %s needs a value\n", argv[0], a.c_str());
      usage(argv[0], 2);
    }
    char* end = nullptr;
    const long long n = std::strtoll(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || n < 0) {
      std::fprintf(stderr, "%s: %s: expected a non-negative integer, got '%s'\n", argv[0], name.c_str(), value.c_str());
      usage(argv[0], 2);
    }
    if (name == "--T") o.T = n;
    else if (name == "--threads") o.threads = static_cast<int>(n);
    else if (name == "--decode") o.decode_steps = n;
    else if (name == "--rows") o.rows = n;
    else if (name == "--seed") o.seed = static_cast<std::uint64_t>(n);
    else {
      std::fprintf(stderr, "%s: unknown option %s\n", argv[0], name.c_str());
      usage(argv[0], 2);
    }
  }
  if (o.T < 1 || o.threads < 1 || o.rows < 1) {
    std::fprintf(stderr, "%s: --T, --threads and --rows must be at least 1\n", argv[0]);
    usage(argv[0], 2);
  }
  return o;
}

// splitmix64: fast, and good enough for test inputs (std::normal_distribution over 10^9 values
// would take longer than the operators).
struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  index_t below(index_t n) { return static_cast<index_t>(next() % static_cast<std::uint64_t>(n)); }
};

// Unit-variance uniform values, filled in parallel (each block has its own stream).
void fill_random(std::vector<float>& x, std::uint64_t seed, int threads) {
  constexpr index_t block = index_t(1) << 20;
  const index_t n = static_cast<index_t>(x.size()), blocks = (n + block - 1) / block;
  lcsm::cpu::parallel_for(threads, blocks, [&](index_t b, int) {
    Rng rng{seed * 0x100000001B3ull + static_cast<std::uint64_t>(b)};
    const index_t end = std::min(n, (b + 1) * block);
    for (index_t i = b * block; i < end; ++i) x[i] = static_cast<float>((2 * rng.uniform() - 1) * std::sqrt(3.0));
  });
}

struct Problem {
  index_t B = 1, T = 0, H = 16, K = 128, V = 128;
  lcsm::LightningAttention op;
  lcsm::cpu::Device device;
  std::vector<float> q, k, v;  // [B, T, H, K], [B, T, H, K], [B, T, H, V]
  std::vector<int> heads;      // the heads checked against the reference
  std::vector<index_t> rows;   // the positions checked, sorted
  Options opt;

  View<const float, 4> qv() const { return lcsm::view(q.data(), {B, T, H, K}); }
  View<const float, 4> kv() const { return lcsm::view(k.data(), {B, T, H, K}); }
  View<const float, 4> vv() const { return lcsm::view(v.data(), {B, T, H, V}); }
  double scale() const { return op.scale_for(K); }
};

Problem make_problem(const Options& opt) {
  Problem p;
  p.opt = opt;
  p.T = opt.T;
  p.op.log_decay = lcsm::decay::minimax(static_cast<int>(p.H), 0, 80);
  p.op.scale = 1.0 / std::sqrt(static_cast<double>(p.K));
  p.device.threads = opt.threads;
  const index_t qk = p.B * p.T * p.H * p.K, vo = p.B * p.T * p.H * p.V;
  p.q.resize(qk);
  p.k.resize(qk);
  p.v.resize(vo);
  fill_random(p.q, opt.seed * 8 + 1, opt.threads);
  fill_random(p.k, opt.seed * 8 + 2, opt.threads);
  fill_random(p.v, opt.seed * 8 + 3, opt.threads);
  p.heads = {0, static_cast<int>(p.H) - 1};  // the fastest and the slowest decay
  Rng rng{opt.seed * 8 + 4};
  for (index_t i = 0; i < opt.rows; ++i) p.rows.push_back(rng.below(p.T));
  p.rows.push_back(p.T - 1);  // the last row sees the whole sequence
  std::sort(p.rows.begin(), p.rows.end());
  p.rows.erase(std::unique(p.rows.begin(), p.rows.end()), p.rows.end());
  return p;
}

// ---------------------------------------------------------------------------------------------
// The float64 side: double copies of the sampled heads and H = 1 views into them.

// The sampled heads of a [B, T, H, D] float tensor as a double [B, T, S, D] tensor.
struct Sliced {
  index_t B = 0, T = 0, S = 0, D = 0;
  std::vector<double> data;

  Sliced(const std::vector<float>& x, const Problem& p, index_t D_, index_t T_ = -1)
      : B(p.B), T(T_ < 0 ? p.T : T_), S(static_cast<index_t>(p.heads.size())), D(D_), data(B * T * S * D) {
    const index_t H = p.H;
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t s = 0; s < S; ++s)
          for (index_t d = 0; d < D; ++d)
            data[((b * T + t) * S + s) * D + d] = x[((b * T + t) * H + p.heads[s]) * D + d];
  }
  // Sampled head s as a [B, T, 1, D] view: the head is picked by the offset, the strides skip
  // the other sampled heads.
  View<const double, 4> head(index_t s) const {
    return lcsm::view(data.data() + s * D, {B, T, 1, D}, {T * S * D, S * D, D, 1});
  }
};

// A [B, T, 1, D] double result per sampled head.
struct PerHead {
  index_t B, T, D;
  std::vector<std::vector<double>> data;
  PerHead(index_t B_, index_t T_, index_t D_, std::size_t heads)
      : B(B_), T(T_), D(D_), data(heads, std::vector<double>(B_ * T_ * D_)) {}
  View<double, 4> head(std::size_t s) { return lcsm::view(data[s].data(), {B, T, 1, D}); }
};

// The descriptor of one head, for the H = 1 reference calls.
lcsm::LightningAttention head_op(const Problem& p, int h) {
  lcsm::LightningAttention op = p.op;
  op.log_decay = {p.op.log_decay[h]};
  return op;
}

// Accumulates ||out - ref||^2 and ||ref||^2; NaN in `out` makes the error NaN.
struct RelRms {
  double num = 0, den = 0;
  void add(double out, double ref) {
    num += (out - ref) * (out - ref);
    den += ref * ref;
  }
  double value() const { return den > 0 ? std::sqrt(num / den) : std::sqrt(num); }
};

// Relative RMS error of the sampled rows of a [B, T, H, D] float output against the per-head
// reference (or of every row when rows is null).
double rows_error(const std::vector<float>& out, index_t H, const Problem& p, PerHead& ref,
                  const std::vector<index_t>* rows) {
  RelRms e;
  const index_t D = ref.D, T = ref.T;
  for (std::size_t s = 0; s < p.heads.size(); ++s) {
    const auto r = ref.head(s);
    for (index_t b = 0; b < ref.B; ++b) {
      auto one = [&](index_t t) {
        for (index_t d = 0; d < D; ++d) e.add(out[((b * T + t) * H + p.heads[s]) * D + d], r(b, t, 0, d));
      };
      if (rows)
        for (index_t t : *rows) one(t);
      else
        for (index_t t = 0; t < T; ++t) one(t);
    }
  }
  return e.value();
}

// Relative RMS error of the sampled heads of a float [N, H, K, V] state against [N, 1, K, V] ones
// (a state of another size per head, cosFormer's [2K, V + 1], passes its size).
double state_error(const std::vector<float>& state, const Problem& p, PerHead& ref, index_t per_head = 0) {
  RelRms e;
  const index_t KV = per_head > 0 ? per_head : p.K * p.V;
  for (std::size_t s = 0; s < p.heads.size(); ++s)
    for (index_t n = 0; n < p.B; ++n)
      for (index_t i = 0; i < KV; ++i) e.add(state[(n * p.H + p.heads[s]) * KV + i], ref.data[s][n * KV + i]);
  return e.value();
}

// ---------------------------------------------------------------------------------------------
// The report: one table, one line per checked output.

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Check {
  std::string output;  // what was compared
  double error;        // relative RMS error
  double bound;        // the error it must stay below
};

// What one call of an operator cost: the first call of a section and the warm call after it.
struct Timing {
  double seconds = 0;                 // the warm call: what tokens/s reports
  double first_seconds = 0;           // the first call
  long first_faults = 0, faults = 0;  // page faults (minor + major) during each
};

struct Section {
  std::string op;
  index_t tokens;
  Timing timing;
  std::vector<Check> checks;
  double reference_seconds = 0;
};

long page_faults() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return r.ru_minflt + r.ru_majflt;
}

// Runs call() twice and times each. The first call of an operator in a process pays for what a model
// running step after step does not: the first touch of memory no one has written yet (the kernel
// maps and zero-fills each 4 KiB page then: docs/performance.md, "The demo") and the allocation of
// its scratch; the second, warm call is what a benchmark measures, and what tokens/s reports.
// reset() (untimed) restores what a call consumes (a decode state advanced in place).
template <class Reset, class Call>
Timing time_warm(Reset&& reset, Call&& call) {
  Timing t;
  for (int pass = 0; pass < 2; ++pass) {
    reset();
    const long f0 = page_faults();
    const auto t0 = std::chrono::steady_clock::now();
    call();
    const double sec = seconds_since(t0);
    (pass == 0 ? t.first_seconds : t.seconds) = sec;
    (pass == 0 ? t.first_faults : t.faults) = page_faults() - f0;
  }
  return t;
}
template <class Call>
Timing time_warm(Call&& call) {
  return time_warm([] {}, call);
}

// A line saying what the demo is doing now (the float64 references take most of its time).
__attribute__((format(printf, 1, 2))) void progress(const char* format, ...) {
  std::va_list args;
  va_start(args, format);
  std::printf("  ... ");
  std::vprintf(format, args);
  std::printf("\n");
  std::fflush(stdout);
  va_end(args);
}

std::string si(double x) {
  const char* units[] = {"", "k", "M", "G", "T"};
  int u = 0;
  while (x >= 1000 && u < 4) {
    x /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", x, units[u]);
  return buf;
}

// A count: exact below 1000, "22.9k" above.
std::string count_text(long n) {
  if (n < 1000) return std::to_string(n);
  std::string t = si(static_cast<double>(n));
  t.erase(std::remove(t.begin(), t.end(), ' '), t.end());
  return t;
}

struct Report {
  std::vector<Section> sections;
  double reference_seconds = 0;

  void add(Section s) {
    reference_seconds += s.reference_seconds;
    sections.push_back(std::move(s));
  }

  // Prints the table; returns the number of checks above their bound (NaN counts as above).
  int print() const {
    int failed = 0;
    std::printf("%-26s %9s %10s %11s %17s   %-28s %10s\n", "operator", "tokens", "time [s]", "tokens/s",
                "1st call [s] (pf)", "checked (float64 ref.)", "rel. RMS");
    std::printf("%s\n", std::string(128, '-').c_str());
    for (const Section& s : sections) {
      for (std::size_t i = 0; i < std::max<std::size_t>(1, s.checks.size()); ++i) {
        if (i == 0)
          std::printf("%-26s %9lld %10.3f %11s %8.3f %8s", s.op.c_str(), static_cast<long long>(s.tokens),
                      s.timing.seconds, si(static_cast<double>(s.tokens) / s.timing.seconds).c_str(),
                      s.timing.first_seconds, ("(" + count_text(s.timing.first_faults) + ")").c_str());
        else std::printf("%-26s %9s %10s %11s %17s", "", "", "", "", "");
        if (i < s.checks.size()) {
          const Check& c = s.checks[i];
          const bool ok = c.error <= c.bound;  // false for NaN
          failed += !ok;
          std::printf("   %-28s %10.2e  %s", c.output.c_str(), c.error, ok ? "ok" : "FAILED");
        }
        std::printf("\n");
      }
    }
    std::printf("%s\n", std::string(128, '-').c_str());
    return failed;
  }
};

// ---------------------------------------------------------------------------------------------
// CPU sections: lightning attention forward, backward and decode.

constexpr double kBound = 1e-4;  // float32 against float64: the errors are ~1e-6

// Prefill: o = lightning(q, k, v) and the final state.
Section cpu_forward(const Problem& p, std::vector<float>* final_state_out) {
  const index_t N = p.B;
  std::vector<float> o(p.B * p.T * p.H * p.V), state(N * p.H * p.K * p.V);
  progress("lightning forward: a first call, then the timed warm call");
  const Timing timing = time_warm([&] {
    lcsm::forward<float>(p.device, p.op, p.qv(), p.kv(), p.vv(), lcsm::view(o.data(), {p.B, p.T, p.H, p.V}),
                         {{}, lcsm::view(state.data(), {N, p.H, p.K, p.V})});
  });
  Section s{"lightning forward", p.B * p.T, timing, {}};

  progress("lightning forward: float64 reference on %zu heads x %lld tokens", p.heads.size(),
           static_cast<long long>(p.T));
  const auto r0 = std::chrono::steady_clock::now();
  const Sliced q(p.q, p, p.K), k(p.k, p, p.K), v(p.v, p, p.V);
  const std::size_t S = p.heads.size();
  PerHead ref_o(p.B, p.T, p.V, S), ref_state(N, 1, p.K * p.V, S);
  lcsm::cpu::parallel_for(p.opt.threads, static_cast<index_t>(S), [&](index_t i, int) {
    lcsm::reference::lightning_forward(head_op(p, p.heads[i]), q.head(i), k.head(i), v.head(i), ref_o.head(i), {},
                                       lcsm::view(ref_state.data[i].data(), {N, 1, p.K, p.V}));
  });
  s.reference_seconds = seconds_since(r0);
  s.checks.push_back({"o, " + std::to_string(p.rows.size()) + " rows x " + std::to_string(S) + " heads",
                      rows_error(o, p.H, p, ref_o, &p.rows), kBound});
  s.checks.push_back({"final state", state_error(state, p, ref_state), kBound});
  if (final_state_out) *final_state_out = std::move(state);
  return s;
}

// Training: dq, dk, dv and the per-head decay gradient from do (and no state gradients).
Section cpu_backward(const Problem& p) {
  std::vector<float> d_o(p.B * p.T * p.H * p.V), dq(p.q.size()), dk(p.k.size()), dv(p.v.size()), dg(p.H);
  fill_random(d_o, p.opt.seed * 8 + 5, p.opt.threads);
  progress("lightning backward: a first call, then the timed warm call");
  const Timing timing = time_warm([&] {
    lcsm::backward<float>(p.device, p.op, p.qv(), p.kv(), p.vv(), lcsm::view(d_o.data(), {p.B, p.T, p.H, p.V}),
                          lcsm::view(dq.data(), {p.B, p.T, p.H, p.K}), lcsm::view(dk.data(), {p.B, p.T, p.H, p.K}),
                          lcsm::view(dv.data(), {p.B, p.T, p.H, p.V}), {}, lcsm::view(dg.data(), {p.H}));
  });
  Section s{"lightning backward", p.B * p.T, timing, {}};

  progress("lightning backward: float64 reference on %zu heads x %lld tokens", p.heads.size(),
           static_cast<long long>(p.T));
  const auto r0 = std::chrono::steady_clock::now();
  const Sliced q(p.q, p, p.K), k(p.k, p, p.K), v(p.v, p, p.V), g(d_o, p, p.V);
  const std::size_t S = p.heads.size();
  PerHead ref_dq(p.B, p.T, p.K, S), ref_dk(p.B, p.T, p.K, S), ref_dv(p.B, p.T, p.V, S);
  std::vector<double> ref_dg(S);
  lcsm::cpu::parallel_for(p.opt.threads, static_cast<index_t>(S), [&](index_t i, int) {
    ref_dg[i] = lcsm::reference::lightning_backward(head_op(p, p.heads[i]), q.head(i), k.head(i), v.head(i), g.head(i),
                                                    ref_dq.head(i), ref_dk.head(i), ref_dv.head(i))
                    .d_log_decay[0];
  });
  s.reference_seconds = seconds_since(r0);
  const std::string rows = std::to_string(p.rows.size()) + " rows x " + std::to_string(S) + " heads";
  s.checks.push_back({"dq, " + rows, rows_error(dq, p.H, p, ref_dq, &p.rows), kBound});
  s.checks.push_back({"dk, " + rows, rows_error(dk, p.H, p, ref_dk, &p.rows), kBound});
  s.checks.push_back({"dv, " + rows, rows_error(dv, p.H, p, ref_dv, &p.rows), kBound});
  RelRms e;  // a sum over T * K terms: a looser bound
  for (std::size_t i = 0; i < S; ++i) e.add(dg[p.heads[i]], ref_dg[i]);
  s.checks.push_back({"d log-decay, " + std::to_string(S) + " heads", e.value(), 1e-3});
  return s;
}

// The decode tokens, [B, n, H, D] with n = decode_steps, as a problem of the same shape and
// descriptor (the same tokens for every operator's decode).
Problem decode_problem(const Problem& p) {
  const index_t n = p.opt.decode_steps;
  Problem d;
  d.B = p.B, d.T = n, d.H = p.H, d.K = p.K, d.V = p.V, d.op = p.op, d.device = p.device, d.opt = p.opt;
  d.heads = p.heads;
  d.q.resize(p.B * n * p.H * p.K);
  d.k.resize(p.B * n * p.H * p.K);
  d.v.resize(p.B * n * p.H * p.V);
  fill_random(d.q, p.opt.seed * 8 + 6, p.opt.threads);
  fill_random(d.k, p.opt.seed * 8 + 7, p.opt.threads);
  fill_random(d.v, p.opt.seed * 8 + 8, p.opt.threads);
  return d;
}

// Token t of a [B, n, H, D] buffer as a [B, 1, H, D] view, the argument of one step() call.
template <class X>
View<X, 4> token(X* base, const Problem& d, index_t t, index_t D) {
  return lcsm::view(base + t * d.H * D, {d.B, 1, d.H, D}, {d.T * d.H * D, d.H * D, D, 1});
}

// Decode: `decode_steps` calls of lcsm::step, one token each, from the prefill's final state.
Section cpu_decode(const Problem& p, const std::vector<float>& prefill_state) {
  const index_t n = p.opt.decode_steps, N = p.B, H = p.H, K = p.K, V = p.V;
  const Problem d = decode_problem(p);
  std::vector<float> o(N * n * H * V), state = prefill_state;
  const auto sv = lcsm::view(state.data(), {N, H, K, V});
  auto tok = [&](auto* base, index_t t, index_t D) { return token(base, d, t, D); };
  progress("lightning decode: %lld steps, twice from the prefill state (the second timed)", static_cast<long long>(n));
  const Timing timing = time_warm([&] { state = prefill_state; },
                                  [&] {
                                    for (index_t t = 0; t < n; ++t)
                                      lcsm::step<float>(p.device, p.op, tok(d.q.data(), t, K), tok(d.k.data(), t, K),
                                                        tok(d.v.data(), t, V), tok(o.data(), t, V), sv);
                                  });
  Section s{"lightning decode (step)", N * n, timing, {}};
  progress("lightning decode: float64 reference on %zu heads", p.heads.size());

  // Reference: the recurrence over the n tokens, from the same starting state in float64.
  const auto r0 = std::chrono::steady_clock::now();
  const Sliced q(d.q, d, K), k(d.k, d, K), v(d.v, d, V);
  const std::size_t S = p.heads.size();
  PerHead ref_o(N, n, V, S), ref_state(N, 1, K * V, S);
  for (std::size_t i = 0; i < S; ++i) {
    std::vector<double> s0(N * K * V);
    for (index_t b = 0; b < N; ++b)
      for (index_t j = 0; j < K * V; ++j) s0[b * K * V + j] = prefill_state[(b * H + p.heads[i]) * K * V + j];
    lcsm::reference::lightning_forward(head_op(p, p.heads[i]), q.head(i), k.head(i), v.head(i), ref_o.head(i),
                                       lcsm::view(static_cast<const double*>(s0.data()), {N, 1, K, V}),
                                       lcsm::view(ref_state.data[i].data(), {N, 1, K, V}));
  }
  s.reference_seconds = seconds_since(r0);
  s.checks.push_back({"o, all " + std::to_string(n) + " steps x " + std::to_string(S) + " heads",
                      rows_error(o, H, d, ref_o, nullptr), kBound});
  s.checks.push_back({"state after the steps", state_error(state, d, ref_state), kBound});
  return s;
}

// ---------------------------------------------------------------------------------------------
// CPU sections: the other operator families on the same q, k, v (Toeplitz on its own input).

// GLA's log-gates, logsigmoid(z) / 16, with pre-activations z = 2x + 2 (std 2, bias 2; x of unit
// variance): per-token decays between about 0.90 and 0.9997, as trained Mamba-2 and GLA layers have
// them. The slow ones carry tokens across thousands of steps, which the state check then covers.
std::vector<float> make_gates(index_t n, std::uint64_t seed, int threads) {
  std::vector<float> g(n);
  fill_random(g, seed, threads);
  for (float& x : g) x = -static_cast<float>(std::log1p(std::exp(-(2.0 * x + 2.0)))) / 16.0f;
  return g;
}

// The sampled heads of a [B, T, H] gate as double [B, T, 1] views (one buffer per head).
struct SlicedGate {
  std::vector<std::vector<double>> heads;
  index_t B, T;
  SlicedGate(const std::vector<float>& g, const Problem& p) : B(p.B), T(p.T) {
    for (int h : p.heads) {
      std::vector<double> one(B * T);
      for (index_t i = 0; i < B * T; ++i) one[i] = g[i * p.H + h];
      heads.push_back(std::move(one));
    }
  }
  View<const double, 3> head(std::size_t s) const { return lcsm::view(heads[s].data(), {B, T, 1}); }
};

// Scalar (Mamba-2 / simple GLA) or vector (GLA) gates: forward with the final state, checked on
// the sampled heads against the float64 EOS reference (a recurrence per head).
template <bool vector_gate>
Section cpu_gated_forward(const Problem& p) {
  using Op = std::conditional_t<vector_gate, lcsm::VectorGatedAttention<float>, lcsm::ScalarGatedAttention<float>>;
  using RefOp = std::conditional_t<vector_gate, lcsm::VectorGatedAttention<double>, lcsm::ScalarGatedAttention<double>>;
  const index_t N = p.B, W = vector_gate ? p.K : 1;
  const std::vector<float> g = make_gates(p.B * p.T * p.H * W, p.opt.seed * 8 + 9, p.opt.threads);
  Op op;
  op.scale = p.scale();
  if constexpr (vector_gate) op.log_gate = lcsm::view(g.data(), {p.B, p.T, p.H, p.K});
  else op.log_gate = lcsm::view(g.data(), {p.B, p.T, p.H});
  std::vector<float> o(p.B * p.T * p.H * p.V), state(N * p.H * p.K * p.V);
  const char* what = vector_gate ? "vector gate forward" : "scalar gate forward";
  progress("%s: a first call, then the timed warm call", what);
  const Timing timing = time_warm([&] {
    lcsm::forward<float>(p.device, op, p.qv(), p.kv(), p.vv(), lcsm::view(o.data(), {p.B, p.T, p.H, p.V}),
                         {{}, lcsm::view(state.data(), {N, p.H, p.K, p.V})});
  });
  Section s{what, p.B * p.T, timing, {}};
  progress("%s: float64 reference on %zu heads x %lld tokens", what, p.heads.size(), static_cast<long long>(p.T));

  const auto r0 = std::chrono::steady_clock::now();
  const Sliced q(p.q, p, p.K), k(p.k, p, p.K), v(p.v, p, p.V);
  const std::size_t S = p.heads.size();
  PerHead ref_o(p.B, p.T, p.V, S), ref_state(N, 1, p.K * p.V, S);
  std::vector<std::vector<double>> gates(S);  // the sampled heads' gates as [B, T, 1, W] doubles
  for (std::size_t i = 0; i < S; ++i) {
    gates[i].resize(p.B * p.T * W);
    for (index_t bt = 0; bt < p.B * p.T; ++bt)
      for (index_t d = 0; d < W; ++d) gates[i][bt * W + d] = g[(bt * p.H + p.heads[i]) * W + d];
  }
  lcsm::cpu::parallel_for(p.opt.threads, static_cast<index_t>(S), [&](index_t i, int) {
    RefOp ref;
    ref.scale = p.scale();
    if constexpr (vector_gate) ref.log_gate = lcsm::view(static_cast<const double*>(gates[i].data()), {p.B, p.T, 1, W});
    else ref.log_gate = lcsm::view(static_cast<const double*>(gates[i].data()), {p.B, p.T, 1});
    lcsm::reference::gated_forward(ref, q.head(i), k.head(i), v.head(i), ref_o.head(i), {},
                                   lcsm::view(ref_state.data[i].data(), {N, 1, p.K, p.V}));
  });
  s.reference_seconds = seconds_since(r0);
  s.checks.push_back({"o, " + std::to_string(p.rows.size()) + " rows x " + std::to_string(S) + " heads",
                      rows_error(o, p.H, p, ref_o, &p.rows), kBound});
  s.checks.push_back({"final state", state_error(state, p, ref_state), kBound});
  return s;
}

// cosFormer, causal, ReLU features, M = T: checked on the sampled heads and rows against the
// float64 EOS reference (2K cos/sin features, the denominator as a value column).
Section cpu_cosformer_forward(const Problem& p) {
  lcsm::CosFormerAttention op;
  std::vector<float> o(p.B * p.T * p.H * p.V);
  progress("cosFormer forward: a first call, then the timed warm call");
  const Timing timing = time_warm([&] {
    lcsm::forward<float>(p.device, op, p.qv(), p.kv(), p.vv(), lcsm::view(o.data(), {p.B, p.T, p.H, p.V}));
  });
  Section s{"cosFormer forward (causal)", p.B * p.T, timing, {}};
  progress("cosFormer forward: float64 reference on %zu heads x %lld tokens", p.heads.size(),
           static_cast<long long>(p.T));

  const auto r0 = std::chrono::steady_clock::now();
  const Sliced q(p.q, p, p.K), k(p.k, p, p.K), v(p.v, p, p.V);
  const std::size_t S = p.heads.size();
  PerHead ref_o(p.B, p.T, p.V, S);
  lcsm::cpu::parallel_for(p.opt.threads, static_cast<index_t>(S), [&](index_t i, int) {
    lcsm::reference::cosformer_forward(op, q.head(i), k.head(i), v.head(i), ref_o.head(i));
  });
  s.reference_seconds = seconds_since(r0);
  s.checks.push_back({"o, " + std::to_string(p.rows.size()) + " rows x " + std::to_string(S) + " heads",
                      rows_error(o, p.H, p, ref_o, &p.rows), kBound});
  return s;
}

// cosFormer decode: the weights depend on M, so a prefill of the T tokens with M fixed at T + n
// (untimed), then n step() calls at positions T, T + 1, ..., checked against the float64
// recurrence from the same prefill state.
Section cpu_cosformer_decode(const Problem& p) {
  const index_t n = p.opt.decode_steps, N = p.B, H = p.H, K = p.K, V = p.V;
  const Problem d = decode_problem(p);
  lcsm::CosFormerAttention op;
  op.length = p.T + n;
  std::vector<float> state(N * H * 2 * K * (V + 1));
  const auto sv = lcsm::view(state.data(), {N, H, 2 * K, V + 1});
  {
    progress("cosFormer decode: the prefill with M = T + %lld (untimed)", static_cast<long long>(n));
    std::vector<float> prefill_o(p.B * p.T * H * V);
    lcsm::forward<float>(p.device, op, p.qv(), p.kv(), p.vv(), lcsm::view(prefill_o.data(), {p.B, p.T, H, V}),
                         {{}, sv});
  }
  const std::vector<float> prefill_state = state;
  std::vector<index_t> position(N);  // of the token each step() call gets
  op.positions = lcsm::view(static_cast<const index_t*>(position.data()), {N});
  std::vector<float> o(N * n * H * V);
  progress("cosFormer decode: %lld steps, twice from the prefill state (the second timed)", static_cast<long long>(n));
  const Timing timing =
      time_warm([&] { state = prefill_state; },
                [&] {
                  for (index_t t = 0; t < n; ++t) {
                    std::fill(position.begin(), position.end(), p.T + t);
                    lcsm::step<float>(p.device, op, token(d.q.data(), d, t, K), token(d.k.data(), d, t, K),
                                      token(d.v.data(), d, t, V), token(o.data(), d, t, V), sv);
                  }
                });
  Section s{"cosFormer decode (step)", N * n, timing, {}};
  progress("cosFormer decode: float64 reference on %zu heads", p.heads.size());

  const auto r0 = std::chrono::steady_clock::now();
  const Sliced q(d.q, d, K), k(d.k, d, K), v(d.v, d, V);
  const std::size_t S = p.heads.size();
  const index_t per_head = 2 * K * (V + 1);
  PerHead ref_o(N, n, V, S), ref_state(N, 1, per_head, S);
  std::fill(position.begin(), position.end(), p.T);  // the first decode token's, for the reference
  for (std::size_t i = 0; i < S; ++i) {
    std::vector<double> s0(N * per_head);
    for (index_t b = 0; b < N; ++b)
      for (index_t j = 0; j < per_head; ++j) s0[b * per_head + j] = prefill_state[(b * H + p.heads[i]) * per_head + j];
    lcsm::reference::cosformer_forward(op, q.head(i), k.head(i), v.head(i), ref_o.head(i),
                                       lcsm::view(static_cast<const double*>(s0.data()), {N, 1, 2 * K, V + 1}),
                                       lcsm::view(ref_state.data[i].data(), {N, 1, 2 * K, V + 1}));
  }
  s.reference_seconds = seconds_since(r0);
  s.checks.push_back({"o, all " + std::to_string(n) + " steps x " + std::to_string(S) + " heads",
                      rows_error(o, H, d, ref_o, nullptr), kBound});
  s.checks.push_back({"state after the steps", state_error(state, d, ref_state, per_head), kBound});
  return s;
}

// TNN's Toeplitz convolution, causal, C = 1024 channels over n = T tokens (FFT path), with
// coefficients built the TNN way (a small relative-position MLP times 0.999^r). Checked on the
// sampled rows of 8 channels against the float64 direct sums.
Section cpu_toeplitz_forward(const Problem& p) {
  const index_t C = 1024, n = p.T, F = 16, checked = 8;
  std::vector<float> w0(F), b0(F), w1(C * F), b1(C), a(C * n), x(n * C), y(n * C);
  fill_random(w0, p.opt.seed * 8 + 10, p.opt.threads);
  fill_random(b0, p.opt.seed * 8 + 11, p.opt.threads);
  fill_random(w1, p.opt.seed * 8 + 12, p.opt.threads);
  fill_random(b1, p.opt.seed * 8 + 13, p.opt.threads);
  fill_random(x, p.opt.seed * 8 + 14, p.opt.threads);
  lcsm::tnn::RelativePositionMlp<float> mlp;
  mlp.layers = {
      {lcsm::view(static_cast<const float*>(w0.data()), {F, 1}), lcsm::view(static_cast<const float*>(b0.data()), {F})},
      {lcsm::view(static_cast<const float*>(w1.data()), {C, F}),
       lcsm::view(static_cast<const float*>(b1.data()), {C})}};
  mlp.gamma = 0.999;
  progress("Toeplitz: TNN coefficients for %lld channels x %lld positions", static_cast<long long>(C),
           static_cast<long long>(n));
  lcsm::tnn::coefficients(mlp, true, n, lcsm::view(a.data(), {C, n}));
  lcsm::ToeplitzConvolution<float> op;
  op.coefficients = lcsm::view(static_cast<const float*>(a.data()), {C, n});
  progress("Toeplitz forward: a first call, then the timed warm call");
  const Timing timing = time_warm([&] {
    lcsm::forward<float>(p.device, op, lcsm::view(static_cast<const float*>(x.data()), {1, n, C}),
                         lcsm::view(y.data(), {1, n, C}));
  });
  Section s{"Toeplitz forward (causal)", n, timing, {}};
  progress("Toeplitz forward: float64 direct sums on %zu rows x %lld channels", p.rows.size(),
           static_cast<long long>(checked));

  const auto r0 = std::chrono::steady_clock::now();
  std::vector<double> xd(n * checked), ad(checked * n);  // channels c * (C / checked)
  for (index_t j = 0; j < checked; ++j) {
    const index_t c = j * (C / checked);
    for (index_t t = 0; t < n; ++t) xd[t * checked + j] = x[t * C + c];
    for (index_t r = 0; r < n; ++r) ad[j * n + r] = a[c * n + r];
  }
  lcsm::ToeplitzConvolution<double> ref;
  ref.coefficients = lcsm::view(static_cast<const double*>(ad.data()), {checked, n});
  const auto xv = lcsm::view(static_cast<const double*>(xd.data()), {1, n, checked});
  RelRms e;
  for (index_t t : p.rows)
    for (index_t j = 0; j < checked; ++j)
      e.add(y[t * C + j * (C / checked)], lcsm::reference::toeplitz_output(ref, xv, 0, 0, n, t, j));
  s.reference_seconds = seconds_since(r0);
  s.checks.push_back(
      {"y, " + std::to_string(p.rows.size()) + " rows x " + std::to_string(checked) + " channels", e.value(), kBound});
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  try {
    const auto t0 = std::chrono::steady_clock::now();
    std::printf("  ... making the inputs\n");
    std::fflush(stdout);
    const Problem p = make_problem(opt);
    std::printf(
        "lcsm demo: lightning attention (MiniMax-01 linear layer shape), gated recurrences, cosFormer and"
        " Toeplitz convolution on the CPU\n");
    std::printf(
        "  B=%lld T=%lld H=%lld K=%lld V=%lld float32, MiniMax decays (layer 0 of 80), scale 1/sqrt(%lld),"
        " %d thread%s\n",
        static_cast<long long>(p.B), static_cast<long long>(p.T), static_cast<long long>(p.H),
        static_cast<long long>(p.K), static_cast<long long>(p.V), static_cast<long long>(p.K), opt.threads,
        opt.threads == 1 ? "" : "s");
    std::printf(
        "  gates logsigmoid(z)/16 (decays 0.90..0.9997); cosFormer ReLU, M = T (decode T + %lld);"
        " Toeplitz C=1024, TNN MLP x 0.999^r\n",
        static_cast<long long>(opt.decode_steps));
    std::printf(
        "  float64 reference on heads %d and %d (lambda = %.4f and %.4f), %zu rows each (random + the last)\n\n",
        p.heads[0], p.heads[1], std::exp(p.op.log_decay[p.heads[0]]), std::exp(p.op.log_decay[p.heads[1]]),
        p.rows.size());

    Report report;
    std::vector<float> state;
    report.add(cpu_forward(p, &state));
    report.add(cpu_backward(p));
    if (opt.decode_steps > 0) report.add(cpu_decode(p, state));
    state = {};
    report.add(cpu_gated_forward<false>(p));
    report.add(cpu_gated_forward<true>(p));
    report.add(cpu_cosformer_forward(p));
    if (opt.decode_steps > 0) report.add(cpu_cosformer_decode(p));
    report.add(cpu_toeplitz_forward(p));
    // A GPU build adds its sections here (the same problem, lcsm::cuda::Device).

    const int failed = report.print();
    std::printf("float64 reference: %.1f s; total %.1f s\n", report.reference_seconds, seconds_since(t0));
    if (failed) {
      std::printf("%d check%s above the bound (%.0e; d log-decay 1e-3)\n", failed, failed == 1 ? "" : "s", kBound);
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "demo: %s\n", e.what());
    return 1;
  }
}
