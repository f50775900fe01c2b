// libFuzzer target for the argument checks of every CPU entry point (lightning attention, the scalar
// and vector gates, cosFormer, the Toeplitz convolution; forward, decode and backward), built with
// clang's -fsanitize=fuzzer,address,undefined (tests/fuzz/CMakeLists.txt, LCSM_BUILD_FUZZ=ON).
//
// Each input draws a family, an entry point, the sizes (now and then wild: negative, 2^31, 2^32,
// 2^62, INT64_MAX), every argument's layout over one arena of doubles (absent, row-major, transposed,
// padded, broadcast, random or wild strides; disjoint slots, random places, or over another argument,
// the final state exactly in place), cu_seqlens (int32 or int64, strided, valid or not, wild counts),
// the descriptor's values (chunk, sub_chunk, scale, eps, M, positions, decays, path, threshold) and
// the thread count, then calls the entry point and requires:
//   - either an lcsm::Error whose message names the function and the argument ("lcsm::... argument '"),
//   - or a return, and then: no view's extent overflowed 64 bits (such a call must be rejected), no
//     byte of the arena outside the outputs' elements changed, and every output matches the float64
//     reference evaluated on a snapshot of the inputs.
// Anything else (another exception type, a sanitizer report, a mismatch) aborts: a finding. Views
// whose extent fits in 64 bits but leaves the arena are not called (a caller's error no check can
// see). Seeds: tests/fuzz/corpus/.
#include <fuzzer/FuzzedDataProvider.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lcsm/lcsm.hpp"

namespace {

using namespace lcsm;

constexpr index_t kArena = index_t{1} << 14;  // doubles
constexpr index_t kSlot = 1024;               // >= the largest argument of the ordinary sizes below

std::string current_call;  // describe() of the call under test, for the report

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "lcsm fuzz finding: %s\n%s", what.c_str(), current_call.c_str());
  std::fflush(stderr);
  std::abort();
}

enum Family { kLightning, kScalar, kVector, kCosformer, kToeplitz };
enum Entry { kForward, kStep, kBackward };
const char* family_name(int f) {
  static const char* names[] = {"lightning", "scalar gate", "vector gate", "cosformer", "toeplitz"};
  return names[f];
}
const char* entry_name(int e) { return e == kForward ? "forward" : e == kStep ? "step" : "backward"; }

struct Arg {
  std::string name;
  std::vector<index_t> shape;
  bool output = false, optional = false;
};

struct Placed {
  bool present = false, null_data = false;
  index_t offset = 0;
  std::vector<index_t> shape, strides;
};

// Saturating arithmetic for the fuzzer's own bookkeeping of wild sizes (its own overflow would be a
// false finding under UBSan).
index_t sadd(index_t a, index_t b) {
  index_t out;
  return detail::add_overflows(a, b, out) ? (b > 0 ? LLONG_MAX : LLONG_MIN) : out;
}
index_t smul(index_t a, index_t b) {
  index_t out;
  return detail::mul_overflows(a, b, out) ? ((a > 0) == (b > 0) ? LLONG_MAX : LLONG_MIN) : out;
}

index_t wild(FuzzedDataProvider& f) {
  return f.PickValueInArray<index_t>({-1, 0, 1, 2, 3, 65, index_t{1} << 20, index_t{1} << 31, index_t{1} << 32,
                                      index_t{1} << 40, index_t{1} << 61, index_t{1} << 62, LLONG_MAX, LLONG_MIN});
}

// The extent of a view in elements, exactly (128-bit): the element count, the last element's offset.
struct Extent {
  bool negative = false, empty = false, overflows = false;
  __int128 count = 0, last = 0;
};
Extent extent_of(const std::vector<index_t>& shape, const std::vector<index_t>& strides, int element_bytes) {
  Extent e;
  e.count = 1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] < 0 || strides[d] < 0) e.negative = true;
    if (shape[d] == 0) e.empty = true;
  }
  if (e.negative || e.empty) return e;
  const __int128 top = static_cast<__int128>(LLONG_MAX);
  for (std::size_t d = 0; d < shape.size(); ++d) {
    e.count *= shape[d];
    if (e.count > top) e.overflows = true;
    if (e.overflows) e.count = top + 1;
    e.last += static_cast<__int128>(shape[d] - 1) * strides[d];
    if (e.last > top) e.overflows = true;
    if (e.overflows) e.last = top + 1;
  }
  if ((e.last + 1) * element_bytes > top) e.overflows = true;
  return e;
}

struct Call {
  int family = 0, entry = 0;
  index_t B = 1, T = 1, H = 1, K = 1, V = 1;
  std::vector<Arg> args;
  std::map<std::string, Placed> placed;
  // The descriptor.
  index_t chunk = 64, sub_chunk = 16, direct_max_length = 48, history_position = 0;
  std::optional<double> scale;
  double eps = 1e-6;
  std::optional<index_t> length;
  bool causal = true, relu = true;
  int path = 0;
  std::vector<double> log_decay;
  bool has_positions = false;
  std::vector<index_t> positions;
  index_t positions_size = 0;
  // cu_seqlens, in memory of their own.
  bool varlen = false, cu64 = false;
  std::vector<std::int32_t> cu32;
  std::vector<std::int64_t> cu64v;
  index_t cu_count = 0, cu_stride = 1;
  int threads = 2;
};

std::string vec(const std::vector<index_t>& x) {
  std::string s = "[";
  for (std::size_t i = 0; i < x.size(); ++i) s += (i ? ", " : "") + std::to_string(x[i]);
  return s + "]";
}

// The call, for a finding's report.
std::string describe(const Call& c) {
  std::string s = std::string(family_name(c.family)) + " " + entry_name(c.entry) + " B=" + std::to_string(c.B) +
                  " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) + " K=" + std::to_string(c.K) +
                  " V=" + std::to_string(c.V) + " chunk=" + std::to_string(c.chunk) +
                  " sub_chunk=" + std::to_string(c.sub_chunk) + " threads=" + std::to_string(c.threads) + "\n";
  for (const auto& [name, p] : c.placed)
    s += "  " + name + (p.present ? (p.null_data ? " null " : " at " + std::to_string(p.offset) + " ") : " absent") +
         (p.present ? vec(p.shape) + " strides " + vec(p.strides) : "") + "\n";
  if (c.varlen)
    s += "  cu_seqlens " + std::string(c.cu64 ? "int64" : "int32") + " count " + std::to_string(c.cu_count) +
         " stride " + std::to_string(c.cu_stride) + "\n";
  if (c.has_positions) s += "  positions size " + std::to_string(c.positions_size) + " " + vec(c.positions) + "\n";
  return s;
}

// The arguments of a (family, entry) with their expected shapes (Toeplitz: C = K channels, n = T,
// decode m = V tokens into a history of n_max = T).
std::vector<Arg> args_of(const Call& c) {
  const index_t B = c.B, T = c.T, H = c.H, K = c.K, V = c.V;
  index_t N = B;
  if (c.varlen) N = sadd(c.cu_count, -1);
  if (c.family == kToeplitz) {
    const index_t n = T, count = c.causal ? n : (n > 0 ? sadd(smul(2, n), -1) : 0);
    if (c.entry == kForward) return {{"x", {B, T, K}}, {"op.coefficients", {K, count}}, {"y", {B, T, K}, true}};
    if (c.entry == kStep)
      return {
          {"x", {B, V, K}}, {"op.coefficients", {K, T}}, {"y", {B, V, K}, true}, {"history.inputs", {B, T, K}, true}};
    return {{"x", {B, T, K}},
            {"dy", {B, T, K}},
            {"op.coefficients", {K, count}},
            {"dx", {B, T, K}, true, true},
            {"da", {K, count}, true, true}};
  }
  const bool cos = c.family == kCosformer;
  const index_t SK = cos ? smul(2, K) : K, SV = cos ? sadd(V, 1) : V;
  std::vector<Arg> a{{"q", {B, T, H, K}}, {"k", {B, T, H, K}}, {"v", {B, T, H, V}}};
  if (c.family == kScalar) a.push_back({"op.log_gate", {B, T, H}});
  if (c.family == kVector) a.push_back({"op.log_gate", {B, T, H, K}});
  if (c.entry == kForward) {
    a.push_back({"o", {B, T, H, V}, true});
    a.push_back({"initial_state", {N, H, SK, SV}, false, true});
    a.push_back({"final_state", {N, H, SK, SV}, true, true});
  } else if (c.entry == kStep) {
    a.push_back({"o", {B, T, H, V}, true});
    a.push_back({"state", {B, H, SK, SV}, true});
  } else {
    a.push_back({"do", {B, T, H, V}});
    a.push_back({"dq", {B, T, H, K}, true});
    a.push_back({"dk", {B, T, H, K}, true});
    a.push_back({"dv", {B, T, H, V}, true});
    a.push_back({"initial_state", {N, H, SK, SV}, false, true});
    a.push_back({"d_final_state", {N, H, SK, SV}, false, true});
    a.push_back({"d_initial_state", {N, H, SK, SV}, true, true});
    if (c.family == kLightning) a.push_back({"d_log_decay", {H}, true, true});
    if (c.family == kScalar) a.push_back({"d_log_gate", {B, T, H}, true, true});
    if (c.family == kVector) a.push_back({"d_log_gate", {B, T, H, K}, true, true});
  }
  return a;
}

std::vector<index_t> row_major(const std::vector<index_t>& shape) {
  std::vector<index_t> s(shape.size());
  index_t n = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    s[d] = n;
    n = detail::saturating_mul(n, std::max<index_t>(shape[d], 1));
  }
  return s;
}

void place(FuzzedDataProvider& f, Call& c) {
  const int layout = f.ConsumeIntegralInRange(0, 7);  // 0-4: disjoint slots, 5: random, 6-7: overlaps
  for (std::size_t i = 0; i < c.args.size(); ++i) {
    const Arg& a = c.args[i];
    Placed p;
    if (a.optional && f.ConsumeBool()) {
      c.placed[a.name] = p;
      continue;
    }
    p.present = true;
    p.shape = a.shape;
    if (f.ConsumeIntegralInRange(0, 15) == 15) {  // a wrong or wild extent
      const std::size_t d = f.ConsumeIntegralInRange<std::size_t>(0, p.shape.size() - 1);
      p.shape[d] = f.ConsumeBool() ? wild(f) : sadd(p.shape[d], f.ConsumeIntegralInRange(-1, 1));
    }
    switch (f.ConsumeIntegralInRange(0, 9)) {
      case 0:  // transposed: the middle dimensions' order swapped in memory
        if (p.shape.size() >= 3) {
          std::vector<index_t> swapped = p.shape;
          std::swap(swapped[1], swapped[2]);
          p.strides = row_major(swapped);
          std::swap(p.strides[1], p.strides[2]);
        } else {
          p.strides = row_major(p.shape);
        }
        break;
      case 1: {  // padded rows
        std::vector<index_t> padded = p.shape;
        padded.back() = sadd(std::max<index_t>(padded.back(), 0), f.ConsumeIntegralInRange(1, 3));
        p.strides = row_major(padded);
        break;
      }
      case 2:  // broadcast: every stride 0 (an error for outputs with more than one element)
        p.strides.assign(p.shape.size(), 0);
        break;
      case 3:  // small random strides
        for (std::size_t d = 0; d < p.shape.size(); ++d) p.strides.push_back(f.ConsumeIntegralInRange(0, 40));
        break;
      case 4:  // one wild stride
        p.strides = row_major(p.shape);
        p.strides[f.ConsumeIntegralInRange<std::size_t>(0, p.strides.size() - 1)] = wild(f);
        break;
      default: p.strides = row_major(p.shape);
    }
    if (layout <= 4) p.offset = static_cast<index_t>(i) * kSlot + f.ConsumeIntegralInRange(0, 16);
    else if (layout == 5) p.offset = f.ConsumeIntegralInRange<index_t>(0, kArena - 1);
    else
      p.offset = f.ConsumeIntegralInRange<index_t>(0, static_cast<index_t>(c.args.size())) * kSlot +
                 f.ConsumeIntegralInRange(-8, 8);
    if (f.ConsumeIntegralInRange(0, 63) == 63) p.null_data = true;
    c.placed[a.name] = p;
  }
  // The final state exactly over the initial state (in place), now and then.
  if (c.placed.count("final_state") && c.placed["final_state"].present && c.placed["initial_state"].present &&
      f.ConsumeIntegralInRange(0, 3) == 3)
    c.placed["final_state"] = c.placed["initial_state"];
}

template <class T, int R>
View<T, R> view_of(double* base, const Placed& p) {
  if (!p.present) return {};
  Shape<R> shape{}, strides{};
  for (int d = 0; d < R; ++d) {
    shape[d] = p.shape[d];
    strides[d] = p.strides[d];
  }
  return {p.null_data ? nullptr : reinterpret_cast<T*>(base + p.offset), shape, strides};
}

struct Bound {
  const Call& c;
  double* base;
  template <class T, int R>
  View<T, R> get(const char* name) const {
    const auto it = c.placed.find(name);
    return it == c.placed.end() ? View<T, R>{} : view_of<T, R>(base, it->second);
  }
  CuSeqlens cu() const {
    if (!c.varlen) return {};
    if (c.cu64) return CuSeqlens(View<const std::int64_t, 1>(c.cu64v.data(), {c.cu_count}, {c.cu_stride}));
    return CuSeqlens(View<const std::int32_t, 1>(c.cu32.data(), {c.cu_count}, {c.cu_stride}));
  }
  View<const index_t, 1> positions() const {
    if (!c.has_positions) return {};
    return {c.positions.data(), {c.positions_size}, {1}};
  }
};

LightningAttention lightning_op(const Call& c) {
  LightningAttention op;
  op.log_decay = c.log_decay;
  op.scale = c.scale;
  op.chunk = c.chunk;
  return op;
}
template <class Op, class G>
Op gated_op(const Call& c, const G& gate) {
  Op op;
  op.log_gate = gate;
  op.scale = c.scale;
  op.chunk = c.chunk;
  if constexpr (std::is_same_v<Op, VectorGatedAttention<double>>) op.sub_chunk = c.sub_chunk;
  return op;
}
CosFormerAttention cosformer_op(const Call& c, const Bound& b) {
  CosFormerAttention op;
  op.feature_map = c.relu ? CosFormerAttention::FeatureMap::relu : CosFormerAttention::FeatureMap::elu_plus_one;
  op.causal = c.causal;
  op.length = c.length;
  op.eps = c.eps;
  op.chunk = c.chunk;
  op.positions = b.positions();
  return op;
}
ToeplitzConvolution<double> toeplitz_op(const Call& c, const Bound& b) {
  ToeplitzConvolution<double> op;
  op.coefficients = b.get<const double, 2>("op.coefficients");
  op.causal = c.causal;
  op.path = static_cast<ToeplitzConvolution<double>::Path>(c.path);
  op.direct_max_length = c.direct_max_length;
  return op;
}

// The entry point, on the arena.
void run(const Call& c, double* arena) {
  const Bound b{c, arena};
  const cpu::Device dev{c.threads};
  const CuSeqlens cu = b.cu();
  if (c.family == kToeplitz) {
    const auto op = toeplitz_op(c, b);
    if (c.entry == kForward) {
      forward<double>(dev, op, b.get<const double, 3>("x"), b.get<double, 3>("y"), cu);
    } else if (c.entry == kStep) {
      ToeplitzHistory<double> h{b.get<double, 3>("history.inputs"), c.history_position};
      step<double>(dev, op, b.get<const double, 3>("x"), b.get<double, 3>("y"), h);
    } else {
      backward<double>(dev, op, b.get<const double, 3>("x"), b.get<const double, 3>("dy"), b.get<double, 3>("dx"),
                       b.get<double, 2>("da"), cu);
    }
    return;
  }
  const auto q = b.get<const double, 4>("q"), k = b.get<const double, 4>("k"), v = b.get<const double, 4>("v");
  const auto o = b.get<double, 4>("o"), state = b.get<double, 4>("state");
  const StateIO<double> io{b.get<const double, 4>("initial_state"), b.get<double, 4>("final_state")};
  const auto d_o = b.get<const double, 4>("do");
  const auto dq = b.get<double, 4>("dq"), dk = b.get<double, 4>("dk"), dv = b.get<double, 4>("dv");
  const StateGrads<double> grads{b.get<const double, 4>("initial_state"), b.get<const double, 4>("d_final_state"),
                                 b.get<double, 4>("d_initial_state")};
  auto entry = [&](const auto& op, auto&& own_grad) {
    if (c.entry == kForward) forward<double>(dev, op, q, k, v, o, io, cu);
    else if (c.entry == kStep) step<double>(dev, op, q, k, v, o, state);
    else own_grad(op);
  };
  switch (c.family) {
    case kLightning:
      entry(lightning_op(c), [&](const auto& op) {
        backward<double>(dev, op, q, k, v, d_o, dq, dk, dv, grads, b.get<double, 1>("d_log_decay"), cu);
      });
      return;
    case kScalar:
      entry(gated_op<ScalarGatedAttention<double>>(c, b.get<const double, 3>("op.log_gate")), [&](const auto& op) {
        backward<double>(dev, op, q, k, v, d_o, dq, dk, dv, grads, b.get<double, 3>("d_log_gate"), cu);
      });
      return;
    case kVector:
      entry(gated_op<VectorGatedAttention<double>>(c, b.get<const double, 4>("op.log_gate")), [&](const auto& op) {
        backward<double>(dev, op, q, k, v, d_o, dq, dk, dv, grads, b.get<double, 4>("d_log_gate"), cu);
      });
      return;
    default:
      entry(cosformer_op(c, b),
            [&](const auto& op) { backward<double>(dev, op, q, k, v, d_o, dq, dk, dv, grads, cu); });
  }
}

// Dense row-major buffers of an output's shape for the reference.
struct Dense {
  std::vector<index_t> shape;
  std::vector<double> data;
  explicit Dense(const std::vector<index_t>& s) : shape(s) {
    index_t n = 1;
    for (index_t e : s) n *= e;
    data.assign(static_cast<std::size_t>(n), 0.0);
  }
  template <int R>
  View<double, R> view() {
    Shape<R> sh{};
    for (int d = 0; d < R; ++d) sh[d] = shape[d];
    return {data.data(), sh, contiguous_strides<R>(sh)};
  }
};

// Calls fn(linear index of the dense buffer, element offset in the arena) over a placed view.
template <class F>
void for_each_element(const Placed& p, F&& fn) {
  const std::size_t R = p.shape.size();
  for (index_t e : p.shape)
    if (e == 0) return;
  std::vector<index_t> idx(R, 0);
  for (index_t linear = 0;; ++linear) {
    index_t off = p.offset;
    for (std::size_t d = 0; d < R; ++d) off += idx[d] * p.strides[d];
    fn(linear, off);
    std::size_t d = R;
    while (d > 0 && ++idx[d - 1] == p.shape[d - 1]) idx[--d] = 0;
    if (d == 0) return;
  }
}

void compare(const Call& c, const char* name, const double* arena, const Dense& want) {
  const Placed& p = c.placed.at(name);
  double worst = 0, scale = 1;
  for (double x : want.data) scale = std::max(scale, std::fabs(x));
  index_t at = -1;
  for_each_element(p, [&](index_t i, index_t off) {
    const double err = std::fabs(arena[off] - want.data[static_cast<std::size_t>(i)]);
    if (!(err <= worst)) {
      worst = std::isnan(err) ? INFINITY : err;
      at = i;
    }
  });
  if (!(worst <= 1e-8 * scale))
    finding(std::string(family_name(c.family)) + " " + entry_name(c.entry) + ": '" + name + "' differs from the " +
            "float64 reference by " + std::to_string(worst) + " at element " + std::to_string(at) + " (scale " +
            std::to_string(scale) + ")");
}

// The float64 reference on a snapshot of the inputs, and the outputs compared against it.
void check_against_reference(const Call& c, const double* snapshot, const double* arena) {
  double* snap = const_cast<double*>(snapshot);  // read only: the views are const
  const Bound b{c, snap};
  const CuSeqlens cu = b.cu();
  auto present = [&](const char* n) { return c.placed.count(n) && c.placed.at(n).present; };
  auto dense_of = [&](const char* n) { return Dense(c.placed.at(n).shape); };
  if (c.family == kToeplitz) {
    const auto op = toeplitz_op(c, b);
    const auto x = b.get<const double, 3>("x");
    if (c.entry == kForward) {
      Dense y = dense_of("y");
      reference::toeplitz_forward(op, x, y.view<3>(), cu);
      compare(c, "y", arena, y);
    } else if (c.entry == kStep) {
      // y_t = sum_{s <= position + i} a[position + i - s] h[s], h the history with x written at position.
      const Placed& hp = c.placed.at("history.inputs");
      const auto h0 = b.get<const double, 3>("history.inputs");
      Dense y = dense_of("y"), hist(hp.shape);
      auto hv = hist.view<3>();
      for (index_t bb = 0; bb < h0.size(0); ++bb)
        for (index_t t = 0; t < h0.size(1); ++t)
          for (index_t ch = 0; ch < h0.size(2); ++ch)
            hv(bb, t, ch) = t >= c.history_position && t < c.history_position + x.size(1)
                                ? x(bb, t - c.history_position, ch)
                                : h0(bb, t, ch);
      auto yv = y.view<3>();
      for (index_t bb = 0; bb < x.size(0); ++bb)
        for (index_t i = 0; i < x.size(1); ++i)
          for (index_t ch = 0; ch < x.size(2); ++ch) {
            double acc = 0;
            const index_t t = c.history_position + i;
            for (index_t s = 0; s <= t; ++s) acc += op.coefficients(ch, t - s) * hv(bb, s, ch);
            yv(bb, i, ch) = acc;
          }
      compare(c, "y", arena, y);
      compare(c, "history.inputs", arena, hist);
    } else {
      Dense dx = present("dx") ? dense_of("dx") : Dense({0, 0, 0}), da = present("da") ? dense_of("da") : Dense({0, 0});
      reference::toeplitz_backward(op, x, b.get<const double, 3>("dy"),
                                   present("dx") ? dx.view<3>() : View<double, 3>{},
                                   present("da") ? da.view<2>() : View<double, 2>{}, cu);
      if (present("dx")) compare(c, "dx", arena, dx);
      if (present("da")) compare(c, "da", arena, da);
    }
    return;
  }
  const auto q = b.get<const double, 4>("q"), k = b.get<const double, 4>("k"), v = b.get<const double, 4>("v");
  if (c.entry != kBackward) {
    const bool step = c.entry == kStep;
    const char* state_out = step ? "state" : "final_state";
    const auto initial = step ? b.get<const double, 4>("state") : b.get<const double, 4>("initial_state");
    Dense o = dense_of("o"), sT = present(state_out) ? dense_of(state_out) : Dense({0, 0, 0, 0});
    const auto sTv = present(state_out) ? sT.view<4>() : View<double, 4>{};
    const CuSeqlens rcu = step ? CuSeqlens{} : cu;
    switch (c.family) {
      case kLightning: reference::lightning_forward(lightning_op(c), q, k, v, o.view<4>(), initial, sTv, rcu); break;
      case kScalar:
        reference::gated_forward(gated_op<ScalarGatedAttention<double>>(c, b.get<const double, 3>("op.log_gate")), q, k,
                                 v, o.view<4>(), initial, sTv, rcu);
        break;
      case kVector:
        reference::gated_forward(gated_op<VectorGatedAttention<double>>(c, b.get<const double, 4>("op.log_gate")), q, k,
                                 v, o.view<4>(), initial, sTv, rcu);
        break;
      default: reference::cosformer_forward(cosformer_op(c, b), q, k, v, o.view<4>(), initial, sTv, rcu);
    }
    compare(c, "o", arena, o);
    if (present(state_out)) compare(c, state_out, arena, sT);
    return;
  }
  const auto d_o = b.get<const double, 4>("do");
  const auto s0 = b.get<const double, 4>("initial_state"), dsT = b.get<const double, 4>("d_final_state");
  Dense dq = dense_of("dq"), dk = dense_of("dk"), dv = dense_of("dv");
  Dense ds0 = present("d_initial_state") ? dense_of("d_initial_state") : Dense({0, 0, 0, 0});
  const auto ds0v = present("d_initial_state") ? ds0.view<4>() : View<double, 4>{};
  std::vector<double> own;  // the operator's own gradient, row-major
  switch (c.family) {
    case kLightning:
      own = reference::lightning_backward(lightning_op(c), q, k, v, d_o, dq.view<4>(), dk.view<4>(), dv.view<4>(), s0,
                                          dsT, ds0v, cu)
                .d_log_decay;
      break;
    case kScalar:
      own = reference::gated_backward(gated_op<ScalarGatedAttention<double>>(c, b.get<const double, 3>("op.log_gate")),
                                      q, k, v, d_o, dq.view<4>(), dk.view<4>(), dv.view<4>(), s0, dsT, ds0v, cu)
                .d_log_gate;
      break;
    case kVector:
      own = reference::gated_backward(gated_op<VectorGatedAttention<double>>(c, b.get<const double, 4>("op.log_gate")),
                                      q, k, v, d_o, dq.view<4>(), dk.view<4>(), dv.view<4>(), s0, dsT, ds0v, cu)
                .d_log_gate;
      break;
    default:
      reference::cosformer_backward(cosformer_op(c, b), q, k, v, d_o, dq.view<4>(), dk.view<4>(), dv.view<4>(), s0, dsT,
                                    ds0v, cu);
  }
  compare(c, "dq", arena, dq);
  compare(c, "dk", arena, dk);
  compare(c, "dv", arena, dv);
  if (present("d_initial_state")) compare(c, "d_initial_state", arena, ds0);
  for (const char* n : {"d_log_decay", "d_log_gate"})
    if (present(n)) {
      Dense g = dense_of(n);
      if (g.data.size() != own.size()) finding(std::string("reference gradient size for ") + n);
      g.data = own;
      compare(c, n, arena, g);
    }
}

// LCSM_FUZZ_STATS=1: how many calls ran to the end, were rejected, or could not be made.
struct Stats {
  long calls = 0, accepted = 0, rejected = 0, skipped = 0;
  ~Stats() {
    if (std::getenv("LCSM_FUZZ_STATS"))
      std::fprintf(stderr,
                   "lcsm fuzz: %ld inputs, %ld accepted (checked against float64), %ld lcsm::Error, %ld not called "
                   "(outside the arena, or absurd work)\n",
                   calls, accepted, rejected, skipped);
  }
};
Stats stats;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider f(data, size);
  ++stats.calls;
  Call c;
  c.family = f.ConsumeIntegralInRange(0, 4);
  c.entry = f.ConsumeIntegralInRange(0, 2);
  auto dim = [&](index_t lo, index_t hi) {
    return f.ConsumeIntegralInRange(0, 31) == 31 ? wild(f) : f.ConsumeIntegralInRange(lo, hi);
  };
  c.B = dim(1, 2);
  c.T = dim(1, 24);
  c.H = dim(1, 2);
  c.K = dim(1, 6);
  c.V = dim(1, 6);
  c.causal = f.ConsumeIntegralInRange(0, 3) != 0;
  c.relu = f.ConsumeBool();
  // cu_seqlens over a packed batch of T tokens (forward and backward only).
  c.varlen = c.entry != kStep && f.ConsumeIntegralInRange(0, 3) == 3;
  if (c.varlen) {
    c.B = f.ConsumeIntegralInRange(0, 7) == 7 ? c.B : 1;
    const index_t n = f.ConsumeIntegralInRange(1, 4);
    std::vector<std::int64_t> offsets{0};
    for (index_t i = 1; i < n; ++i)
      offsets.push_back(
          std::min<std::int64_t>(std::max<index_t>(c.T, 0), offsets.back() + f.ConsumeIntegralInRange(0, 20)));
    offsets.push_back(std::max<index_t>(c.T, 0));
    if (f.ConsumeIntegralInRange(0, 7) == 7)
      offsets[f.ConsumeIntegralInRange<std::size_t>(0, offsets.size() - 1)] = dim(-3, 50);
    c.cu64 = f.ConsumeBool();
    c.cu_stride = f.ConsumeIntegralInRange(0, 7) == 7 ? f.PickValueInArray<index_t>({0, 2, 3, index_t{1} << 62}) : 1;
    c.cu_count = static_cast<index_t>(offsets.size());
    if (f.ConsumeIntegralInRange(0, 7) == 7) c.cu_count = dim(0, 6);
    const index_t stride = c.cu_stride > 0 && c.cu_stride < 8 ? c.cu_stride : 1;
    for (std::size_t i = 0; i < offsets.size(); ++i)
      for (index_t s = 0; s < stride; ++s) {
        c.cu64v.push_back(s == 0 ? offsets[i] : -7);
        c.cu32.push_back(static_cast<std::int32_t>(s == 0 ? offsets[i] : -7));
      }
  }
  // The descriptor.
  c.chunk = f.ConsumeIntegralInRange(0, 15) == 15 ? dim(-1, 2000) : f.ConsumeIntegralInRange(1, 70);
  c.sub_chunk = f.ConsumeIntegralInRange(0, 15) == 15
                    ? dim(-1, 100)
                    : f.ConsumeIntegralInRange<index_t>(1, std::max<index_t>(1, std::min<index_t>(c.chunk, 70)));
  if (f.ConsumeBool()) c.scale = f.PickValueInArray<double>({1.0, 0.37, 2.5, 0.0, -1.0, NAN, INFINITY, 1e3});
  c.eps = f.PickValueInArray<double>({1e-6, 1e-6, 0.5, 4.0, 0.0, -1.0, NAN, 1e300});
  if (f.ConsumeBool())
    c.length = f.ConsumeIntegralInRange(0, 7) == 7 ? dim(0, 100) : f.ConsumeIntegralInRange<index_t>(1, 200);
  c.has_positions = f.ConsumeBool() || c.entry == kStep;
  c.positions_size = f.ConsumeIntegralInRange(0, 15) == 15 ? dim(0, 5) : (c.varlen ? sadd(c.cu_count, -1) : c.B);
  if (c.has_positions && c.positions_size >= 0 && c.positions_size <= 64)
    for (index_t i = 0; i < c.positions_size; ++i)
      c.positions.push_back(f.ConsumeIntegralInRange(0, 15) == 15 ? dim(-2, 100)
                                                                  : f.ConsumeIntegralInRange<index_t>(0, 100));
  c.path = f.ConsumeIntegralInRange(0, 2);
  c.direct_max_length = f.ConsumeIntegralInRange(0, 7) == 7 ? dim(-1, 100) : f.ConsumeIntegralInRange<index_t>(0, 64);
  c.history_position = f.ConsumeIntegralInRange(0, 7) == 7 ? dim(-1, 30) : f.ConsumeIntegralInRange<index_t>(0, 30);
  const index_t heads = c.H >= 0 && c.H <= 8 ? c.H : 2;
  for (index_t h = 0; h < heads + (f.ConsumeIntegralInRange(0, 15) == 15 ? 1 : 0); ++h)
    c.log_decay.push_back(f.ConsumeIntegralInRange(0, 15) == 15
                              ? f.PickValueInArray<double>({-1000.0, -1000.5, -1e308, 0.5, NAN, -0.0, -INFINITY})
                              : -f.ConsumeIntegralInRange(0, 100) / 50.0);
  c.threads = f.ConsumeIntegralInRange(0, 31) == 31 ? f.PickValueInArray<int>({0, -3, 64, INT_MAX})
                                                    : f.ConsumeIntegralInRange(1, 5);
  // Shapes with wild sizes cannot be listed (or allocated) as expected shapes: those calls still run,
  // with the wild value in the views.
  c.args = args_of(c);
  place(f, c);

  // The arena: values in [-1, 0] (valid gates) or [-1, 1], from a splitmix64 stream.
  std::vector<double> arena(static_cast<std::size_t>(kArena));
  std::uint64_t state = f.ConsumeIntegral<std::uint64_t>();
  const bool signed_values = f.ConsumeBool();
  for (double& x : arena) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    const double unit = static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;  // [0, 1)
    x = signed_values ? 2 * unit - 1 : -unit;
  }

  // Which calls must be rejected (an extent beyond 64 bits, a negative extent or stride, null data
  // with elements), and which cannot be called (an extent inside 64 bits that leaves the arena).
  bool must_throw = false;
  for (const auto& [name, p] : c.placed) {
    if (!p.present) continue;
    if (p.null_data) {
      bool any_zero = false;
      for (index_t e : p.shape) any_zero = any_zero || e == 0;
      if (!any_zero) must_throw = true;  // present (not absent) and null: an error or ...
      continue;                          // ... an empty view; nothing is read either way
    }
    const Extent e = extent_of(p.shape, p.strides, 8);
    if (e.negative || e.overflows) {
      must_throw = true;
      continue;
    }
    if (e.empty) continue;
    if (p.offset < 0 || p.offset + e.last >= kArena) {  // a caller's error no check can see
      ++stats.skipped;
      return 0;
    }
  }
  // A valid call may still ask for absurd work (2^40 broadcast sequences summed into one da, a
  // direct Toeplitz sum over 2^20 tokens): not a finding, and not for a fuzz iteration either.
  if (!must_throw) {
    bool big = c.family == kToeplitz && c.T > 4096;
    for (const auto& [name, p] : c.placed)
      if (p.present && !p.null_data) {
        const Extent e = extent_of(p.shape, p.strides, 8);
        big = big || (!e.negative && !e.empty && e.count > (__int128{1} << 22));
      }
    if (big) {
      ++stats.skipped;
      return 0;
    }
  }
  if (c.varlen) {
    const Extent e = extent_of({c.cu_count}, {c.cu_stride}, c.cu64 ? 8 : 4);
    if (e.negative || e.overflows) must_throw = true;
    else if (!e.empty && e.last >= static_cast<__int128>(c.cu32.size())) {
      ++stats.skipped;
      return 0;
    }
  }
  if (c.has_positions && c.family == kCosformer) {
    const Extent e = extent_of({c.positions_size}, {1}, 8);
    if (e.negative || e.overflows) must_throw = true;
    else if (!e.empty && e.last >= static_cast<__int128>(c.positions.size())) {
      ++stats.skipped;
      return 0;
    }
  }

  current_call = describe(c);
  if (std::getenv("LCSM_FUZZ_SHOW")) std::fprintf(stderr, "%s", current_call.c_str());
  const std::vector<double> snapshot = arena;
  try {
    run(c, arena.data());
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.rfind("lcsm::", 0) != 0 || m.find(": argument '") == std::string::npos)
      finding("an lcsm::Error without the function and the argument: " + m);
    ++stats.rejected;
    return 0;
  } catch (const std::exception& e) {
    finding(std::string("an exception other than lcsm::Error: ") + e.what());
  }
  if (must_throw)
    finding(std::string(family_name(c.family)) + " " + entry_name(c.entry) + " accepted a view that must be rejected");

  ++stats.accepted;
  // Nothing outside the outputs' elements changed.
  std::vector<char> written(arena.size(), 0);
  for (const Arg& a : c.args)
    if (a.output && c.placed[a.name].present)
      for_each_element(c.placed[a.name], [&](index_t, index_t off) { written[static_cast<std::size_t>(off)] = 1; });
  for (std::size_t i = 0; i < arena.size(); ++i)
    if (!written[i] && std::memcmp(&arena[i], &snapshot[i], sizeof(double)) != 0)
      finding(std::string(family_name(c.family)) + " " + entry_name(c.entry) + " wrote outside its outputs at arena[" +
              std::to_string(i) + "]");
  // ... and the outputs are the float64 reference's (when there are any: the reference would walk a
  // batch that no output bounds).
  bool any_output = false;
  for (const Arg& a : c.args)
    if (a.output && c.placed[a.name].present) {
      const Extent e = extent_of(c.placed[a.name].shape, c.placed[a.name].strides, 8);
      any_output = any_output || (!e.empty && !e.negative);
    }
  if (!any_output) return 0;
  try {
    check_against_reference(c, snapshot.data(), arena.data());
  } catch (const Error& e) {
    finding(std::string("the reference rejected a call the backend accepted: ") + e.what());
  }
  return 0;
}
