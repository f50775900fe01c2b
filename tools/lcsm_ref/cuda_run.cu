// `run --device cuda`: lcsm's CUDA backend on a problem, through the public API only (lcsm/cuda.cuh),
// for what that backend has: forward, backward and decode of lightning attention and both gates,
// cosFormer's forward, backward and decode, and the Toeplitz convolution's forward, backward and decode, in
// f32, f16 and bf16. Inputs go to the device
// once; each timed call is followed by a device synchronisation (the time is the call's, enqueue to
// completion); outputs come back converted exactly (they are already in the problem's dtype, states
// in fp32).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu_run.hpp"
#include "cuda_run.hpp"
#include "error.hpp"
#include "lcsm/cuda.cuh"

namespace lcsm::ref {
namespace {

template <class E>
E element(double x) {  // exact: the values are representable in the problem's dtype
  if constexpr (std::is_same_v<E, __half>) return __float2half_rn(static_cast<float>(x));
  else if constexpr (std::is_same_v<E, __nv_bfloat16>) return __float2bfloat16_rn(static_cast<float>(x));
  else return static_cast<E>(x);
}
template <class E>
double value(E x) {
  if constexpr (std::is_same_v<E, __half>) return static_cast<double>(__half2float(x));
  else if constexpr (std::is_same_v<E, __nv_bfloat16>) return static_cast<double>(__bfloat162float(x));
  else return static_cast<double>(x);
}

// Device memory holding `count` elements of E.
template <class E>
class Array {
 public:
  explicit Array(std::size_t count) : count_(count) {
    if (count_) LCSM_CUDA_CHECK(cudaMalloc(&ptr_, count_ * sizeof(E)));
  }
  explicit Array(const std::vector<double>& values) : Array(values.size()) { upload(values); }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  ~Array() {
    if (ptr_) cudaFree(ptr_);
  }
  void upload(const std::vector<double>& values) {
    std::vector<E> host(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) host[i] = element<E>(values[i]);
    if (count_) LCSM_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), count_ * sizeof(E), cudaMemcpyHostToDevice));
  }
  std::vector<double> download() const {
    std::vector<E> host(count_);
    if (count_) LCSM_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, count_ * sizeof(E), cudaMemcpyDeviceToHost));
    std::vector<double> out(count_);
    for (std::size_t i = 0; i < count_; ++i) out[i] = value(host[i]);
    return out;
  }
  E* get() const { return static_cast<E*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  std::size_t count_ = 0;
};

Tensor64 output_of(const Problem& pr, const std::string& name, const std::vector<double>& values) {
  return output_from(pr.output(name), values);
}

void synchronize() { LCSM_CUDA_CHECK(cudaDeviceSynchronize()); }

template <class X>
View<X, 4> token(X* base, index_t t, index_t B, index_t T, index_t H, index_t D) {
  return lcsm::view(base + t * H * D, {B, 1, H, D}, {T * H * D, H * D, D, 1});
}

// The backward of lightning attention or a gate: dq, dk, dv, the initial state's gradient (with a
// state) and the decay's (d_log_decay [H] or d_log_gate in the gate's shape), workspace from the query.
template <class T, class Op>
std::vector<Tensor64> run_recurrence_backward(const Problem& pr, const Op& op, View<const T, 4> qv, View<const T, 4> kv,
                                              View<const T, 4> vv, const Array<float>& s0, const CuSeqlens& cu,
                                              Stopwatch& watch) {
  const Descriptor& d = pr.descriptor;
  const index_t B = d.B, Tn = d.T, H = d.H, K = d.K, V = d.V, N = d.sequences();
  const Array<T> d_o(pr.input("do").values);
  const Array<float> dsT(d.state ? pr.input("d_final_state").values : std::vector<double>{});
  Array<T> dq(B * Tn * H * K), dk(B * Tn * H * K), dv(B * Tn * H * V);
  Array<float> ds0(d.state ? N * H * K * V : 0);
  const Shape<4> ss{N, H, K, V};
  const StateGrads<float> states{
      d.state ? View<const float, 4>(s0.get(), ss, contiguous_strides<4>(ss)) : View<const float, 4>{},
      d.state ? View<const float, 4>(dsT.get(), ss, contiguous_strides<4>(ss)) : View<const float, 4>{},
      d.state ? View<float, 4>(ds0.get(), ss, contiguous_strides<4>(ss)) : View<float, 4>{}};
  const auto dov = lcsm::view(static_cast<const T*>(d_o.get()), {B, Tn, H, V});
  const auto dqv = lcsm::view(dq.get(), {B, Tn, H, K}), dkv = lcsm::view(dk.get(), {B, Tn, H, K});
  const auto dvv = lcsm::view(dv.get(), {B, Tn, H, V});
  std::vector<double> decay_gradient;
  auto call = [&](auto d_decay, const Array<float>& dg) {
    const std::size_t bytes = cuda::backward_workspace_bytes<T>(op, qv, vv, states, d_decay, cu);
    const Array<unsigned char> workspace(bytes);
    const cuda::Device dev{nullptr, {workspace.get(), bytes}};
    watch.measure([&] {
      lcsm::backward<T>(dev, op, qv, kv, vv, dov, dqv, dkv, dvv, states, d_decay, cu);
      synchronize();
    });
    decay_gradient = dg.download();
  };
  if constexpr (std::is_same_v<Op, LightningAttention>) {
    Array<float> dg(H);
    call(lcsm::view(dg.get(), {H}), dg);
  } else if constexpr (std::is_same_v<Op, ScalarGatedAttention<T>>) {
    Array<float> dg(B * Tn * H);
    call(lcsm::view(dg.get(), {B, Tn, H}), dg);
  } else {
    Array<float> dg(B * Tn * H * K);
    call(lcsm::view(dg.get(), {B, Tn, H, K}), dg);
  }
  std::vector<Tensor64> out = {output_of(pr, "dq", dq.download()), output_of(pr, "dk", dk.download()),
                               output_of(pr, "dv", dv.download())};
  if (d.state) out.push_back(output_of(pr, "d_initial_state", ds0.download()));
  out.push_back(output_of(pr, d.op == Operator::lightning ? "d_log_decay" : "d_log_gate", decay_gradient));
  return out;
}

// cosFormer: forward, backward, and decode token by token (positions in device memory, one row per
// token).
template <class T>
std::vector<Tensor64> run_cosformer(const Problem& pr, Stopwatch& watch) {
  const Descriptor& d = pr.descriptor;
  const index_t B = d.B, Tn = d.T, H = d.H, K = d.K, V = d.V, N = d.sequences();
  const Shape<4> ss{N, H, 2 * K, V + 1};
  CosFormerAttention op;
  op.feature_map = d.elu ? CosFormerAttention::FeatureMap::elu_plus_one : CosFormerAttention::FeatureMap::relu;
  op.causal = d.causal;
  if (d.M) op.length = *d.M;
  std::vector<double> first = pr.has_input("positions") ? pr.input("positions").values : std::vector<double>{};
  std::vector<double> rows;  // decode: token t's positions first + t
  for (index_t t = 0; t < (d.dir == Direction::step ? Tn : 1); ++t)
    for (double f : first) rows.push_back(f + (d.dir == Direction::step ? static_cast<double>(t) : 0.0));
  const Array<std::int64_t> positions(rows);
  auto positions_at = [&](index_t t) {
    return first.empty() ? View<const index_t, 1>{}
                         : lcsm::view(static_cast<const index_t*>(positions.get()) + t * N, {N});
  };
  const Array<T> q(pr.input("q").values), k(pr.input("k").values), v(pr.input("v").values);
  const std::vector<double> s0_values =
      d.state ? pr.input("initial_state").values : std::vector<double>(N * H * 2 * K * (V + 1), 0.0);
  Array<float> s0(s0_values), state(s0_values.size());
  Array<T> o(B * Tn * H * V);
  Array<std::int64_t> offsets(pr.has_input("cu_seqlens") ? pr.input("cu_seqlens").values : std::vector<double>{});
  const CuSeqlens cu =
      pr.has_input("cu_seqlens") ? CuSeqlens(static_cast<const std::int64_t*>(offsets.get()), N + 1) : CuSeqlens{};
  const auto qv = lcsm::view(static_cast<const T*>(q.get()), {B, Tn, H, K});
  const auto vv = lcsm::view(static_cast<const T*>(v.get()), {B, Tn, H, V});
  const auto sv = View<float, 4>(state.get(), ss, contiguous_strides<4>(ss));
  const View<const float, 4> s0v =
      d.state ? View<const float, 4>(s0.get(), ss, contiguous_strides<4>(ss)) : View<const float, 4>{};
  const auto kv = lcsm::view(static_cast<const T*>(k.get()), {B, Tn, H, K});
  if (d.dir == Direction::backward) {
    op.positions = positions_at(0);
    const Array<T> d_o(pr.input("do").values);
    const Array<float> dsT(d.state ? pr.input("d_final_state").values : std::vector<double>{});
    Array<T> dq(B * Tn * H * K), dk(B * Tn * H * K), dv(B * Tn * H * V);
    Array<float> ds0(d.state ? N * H * 2 * K * (V + 1) : 0);
    const StateGrads<float> states{
        s0v, d.state ? View<const float, 4>(dsT.get(), ss, contiguous_strides<4>(ss)) : View<const float, 4>{},
        d.state ? View<float, 4>(ds0.get(), ss, contiguous_strides<4>(ss)) : View<float, 4>{}};
    const std::size_t bytes = cuda::backward_workspace_bytes<T>(op, qv, vv, states, cu);
    const Array<unsigned char> workspace(bytes);
    const cuda::Device dev{nullptr, {workspace.get(), bytes}};
    watch.measure([&] {
      lcsm::backward<T>(dev, op, qv, kv, vv, lcsm::view(static_cast<const T*>(d_o.get()), {B, Tn, H, V}),
                        lcsm::view(dq.get(), {B, Tn, H, K}), lcsm::view(dk.get(), {B, Tn, H, K}),
                        lcsm::view(dv.get(), {B, Tn, H, V}), states, cu);
      synchronize();
    });
    std::vector<Tensor64> out = {output_of(pr, "dq", dq.download()), output_of(pr, "dk", dk.download()),
                                 output_of(pr, "dv", dv.download())};
    if (d.state) out.push_back(output_of(pr, "d_initial_state", ds0.download()));
    return out;
  }
  if (d.dir == Direction::forward) {
    op.positions = positions_at(0);
    const std::size_t bytes = cuda::forward_workspace_bytes<T>(op, qv, vv, cu);
    const Array<unsigned char> workspace(bytes);
    const cuda::Device dev{nullptr, {workspace.get(), bytes}};
    watch.measure([&] {
      lcsm::forward<T>(dev, op, qv, kv, vv, lcsm::view(o.get(), {B, Tn, H, V}), {s0v, sv}, cu);
      synchronize();
    });
  } else {
    watch.measure(
        [&] { LCSM_CUDA_CHECK(cudaMemcpy(state.get(), s0.get(), s0_values.size() * 4, cudaMemcpyDeviceToDevice)); },
        [&] {
          for (index_t t = 0; t < Tn; ++t) {
            op.positions = positions_at(t);
            lcsm::step<T>(cuda::Device{}, op, token(static_cast<const T*>(q.get()), t, B, Tn, H, K),
                          token(static_cast<const T*>(k.get()), t, B, Tn, H, K),
                          token(static_cast<const T*>(v.get()), t, B, Tn, H, V), token(o.get(), t, B, Tn, H, V), sv);
          }
          synchronize();
        });
  }
  return {output_of(pr, "o", o.download()), output_of(pr, "final_state", state.download())};
}

// Lightning attention and the gates: forward (workspace from the query) and decode token by token.
template <class T>
std::vector<Tensor64> run_recurrence(const Problem& pr, Stopwatch& watch) {
  const Descriptor& d = pr.descriptor;
  const index_t B = d.B, Tn = d.T, H = d.H, K = d.K, V = d.V, N = d.sequences();
  const Array<T> q(pr.input("q").values), k(pr.input("k").values), v(pr.input("v").values);
  const std::vector<double> s0_values =
      d.state ? pr.input("initial_state").values : std::vector<double>(N * H * K * V, 0.0);
  Array<float> s0(s0_values), state(s0_values.size());
  Array<T> o(B * Tn * H * V);
  Array<std::int64_t> offsets(pr.has_input("cu_seqlens") ? pr.input("cu_seqlens").values : std::vector<double>{});
  const CuSeqlens cu =
      pr.has_input("cu_seqlens") ? CuSeqlens(static_cast<const std::int64_t*>(offsets.get()), N + 1) : CuSeqlens{};
  const Array<float> gate(d.gated() ? pr.input("log_gate").values : std::vector<double>{});
  const auto qv = lcsm::view(static_cast<const T*>(q.get()), {B, Tn, H, K});
  const auto kv = lcsm::view(static_cast<const T*>(k.get()), {B, Tn, H, K});
  const auto vv = lcsm::view(static_cast<const T*>(v.get()), {B, Tn, H, V});
  const auto ov = lcsm::view(o.get(), {B, Tn, H, V});
  const auto sv = lcsm::view(state.get(), {N, H, K, V});
  std::vector<Tensor64> backward_outputs;

  // f(op, set_gate) with the operator's descriptor; set_gate(t, n) points it at tokens [t, t + n).
  auto with_op = [&](auto&& f) {
    if (d.op == Operator::lightning) {
      LightningAttention op;
      op.log_decay = pr.input("log_decay").values;
      f(op, [](index_t, index_t) {});
    } else if (d.op == Operator::scalar_gate) {
      ScalarGatedAttention<T> op;
      f(op, [&](index_t t, index_t n) {
        op.log_gate = lcsm::view(static_cast<const float*>(gate.get()) + t * H, {B, n, H}, {Tn * H, H, 1});
      });
    } else {
      VectorGatedAttention<T> op;
      f(op, [&](index_t t, index_t n) {
        op.log_gate =
            lcsm::view(static_cast<const float*>(gate.get()) + t * H * K, {B, n, H, K}, {Tn * H * K, H * K, K, 1});
      });
    }
  };
  with_op([&](auto& op, auto&& set_gate) {
    set_gate(0, Tn);
    if (d.dir == Direction::backward) {
      backward_outputs = run_recurrence_backward<T>(pr, op, qv, kv, vv, s0, cu, watch);
      return;
    }
    if (d.dir == Direction::forward) {
      const std::size_t bytes = cuda::forward_workspace_bytes<T>(op, qv, vv, cu);
      const Array<unsigned char> workspace(bytes);
      const cuda::Device dev{nullptr, {workspace.get(), bytes}};
      const View<const float, 4> s0v =
          d.state ? lcsm::view(static_cast<const float*>(s0.get()), {N, H, K, V}) : View<const float, 4>{};
      watch.measure([&] {
        lcsm::forward<T>(dev, op, qv, kv, vv, ov, {s0v, sv}, cu);
        synchronize();
      });
      return;
    }
    watch.measure(
        [&] { LCSM_CUDA_CHECK(cudaMemcpy(state.get(), s0.get(), s0_values.size() * 4, cudaMemcpyDeviceToDevice)); },
        [&] {
          for (index_t t = 0; t < Tn; ++t) {
            set_gate(t, 1);
            lcsm::step<T>(cuda::Device{}, op, token(static_cast<const T*>(q.get()), t, B, Tn, H, K),
                          token(static_cast<const T*>(k.get()), t, B, Tn, H, K),
                          token(static_cast<const T*>(v.get()), t, B, Tn, H, V), token(o.get(), t, B, Tn, H, V), sv);
          }
          synchronize();
        });
  });
  if (d.dir == Direction::backward) return backward_outputs;
  return {output_of(pr, "o", o.download()), output_of(pr, "final_state", state.download())};
}

template <class T>
std::vector<Tensor64> run_toeplitz(const Problem& pr, Stopwatch& watch) {
  const Descriptor& d = pr.descriptor;
  const index_t B = d.B, n = d.T, C = d.C, count = pr.input("coefficients").shape[1];
  const Array<T> x(pr.input("x").values), a(pr.input("coefficients").values);
  Array<T> y(B * n * C);
  Array<std::int64_t> offsets(pr.has_input("cu_seqlens") ? pr.input("cu_seqlens").values : std::vector<double>{});
  const CuSeqlens cu = pr.has_input("cu_seqlens")
                           ? CuSeqlens(static_cast<const std::int64_t*>(offsets.get()), d.sequences() + 1)
                           : CuSeqlens{};
  ToeplitzConvolution<T> op;
  op.causal = d.causal;
  op.coefficients = lcsm::view(static_cast<const T*>(a.get()), {C, count});
  const auto xv = lcsm::view(static_cast<const T*>(x.get()), {B, n, C});
  if (d.dir == Direction::forward) {
    const std::size_t bytes = cuda::forward_workspace_bytes<T>(op, xv, cu);
    const Array<unsigned char> workspace(bytes);
    const cuda::Device dev{nullptr, {workspace.get(), bytes}};
    watch.measure([&] {
      lcsm::forward<T>(dev, op, xv, lcsm::view(y.get(), {B, n, C}), cu);
      synchronize();
    });
    return {output_of(pr, "y", y.download())};
  }
  if (d.dir == Direction::step) {
    Array<T> past(B * n * C);
    ToeplitzHistory<T> history{lcsm::view(past.get(), {B, n, C}), 0};
    watch.measure([&] { history.position = 0; },
                  [&] {
                    for (index_t t = 0; t < n; ++t)
                      lcsm::step<T>(cuda::Device{}, op,
                                    lcsm::view(static_cast<const T*>(x.get()) + t * C, {B, 1, C}, {n * C, C, 1}),
                                    lcsm::view(y.get() + t * C, {B, 1, C}, {n * C, C, 1}), history);
                    synchronize();
                  });
    return {output_of(pr, "y", y.download())};
  }
  const Array<T> dy(pr.input("dy").values);
  Array<T> dx(B * n * C), da(C * count);
  const std::size_t bytes = cuda::backward_workspace_bytes<T>(op, xv, true, true, cu);
  const Array<unsigned char> workspace(bytes);
  const cuda::Device dev{nullptr, {workspace.get(), bytes}};
  watch.measure([&] {
    lcsm::backward<T>(dev, op, xv, lcsm::view(static_cast<const T*>(dy.get()), {B, n, C}),
                      lcsm::view(dx.get(), {B, n, C}), lcsm::view(da.get(), {C, count}), cu);
    synchronize();
  });
  return {output_of(pr, "dx", dx.download()), output_of(pr, "da", da.download())};
}

template <class T>
std::vector<Tensor64> run_typed(const Problem& pr, Stopwatch& watch) {
  if (pr.descriptor.op == Operator::toeplitz) return run_toeplitz<T>(pr, watch);
  if (pr.descriptor.op == Operator::cosformer) return run_cosformer<T>(pr, watch);
  return run_recurrence<T>(pr, watch);
}

}  // namespace

std::string cuda_device_name() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0)
    fail("--device cuda: no CUDA device here (", status != cudaSuccess ? cudaGetErrorString(status) : "none found",
         ")");
  int device = 0;
  LCSM_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  LCSM_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

std::string cuda_lacks(const Descriptor& d) {
  if (d.op == Operator::cosformer && d.K > 128) return "cosFormer on the CUDA backend takes K <= 128";
  if (d.op == Operator::cosformer && d.dir == Direction::backward && d.V > 256)
    return "cosFormer's backward on the CUDA backend takes V <= 256";
  if (d.dtype == test::Dtype::f64) return "the CUDA backend takes f32, f16 and bf16 inputs, not f64";
  return "";
}

std::vector<Tensor64> run_cuda(const Problem& pr, Stopwatch& watch) {
  const std::string lacks = cuda_lacks(pr.descriptor);
  if (!lacks.empty()) fail("--device cuda: ", lacks);
  switch (pr.descriptor.dtype) {
    case test::Dtype::f32: return run_typed<float>(pr, watch);
    case test::Dtype::f16: return run_typed<__half>(pr, watch);
    default: return run_typed<__nv_bfloat16>(pr, watch);
  }
}

}  // namespace lcsm::ref
