// A C ABI over lcsm's CUDA lightning attention, gated recurrences (forward, decode, backward),
// cosFormer (forward) and the Toeplitz convolution, so the peers script (Python, ctypes) can run them
// on PyTorch tensors in the same process as fla and SDPA. Contiguous [B, T, H, D] tensors only; gates
// fp32 [B, T, H] (scalar, kind 0) or [B, T, H, K] (vector, kind 1).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <vector>

#include "lcsm/cuda.cuh"

namespace {

template <class F>
int guarded(char* error, int error_len, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    if (error && error_len > 0) {
      std::strncpy(error, e.what(), error_len - 1);
      error[error_len - 1] = 0;
    }
    return 1;
  }
}

template <class F>
void dispatch(int dtype, F&& f) {
  if (dtype == 0) f(float{});
  else if (dtype == 1) f(__half{});
  else if (dtype == 2) f(__nv_bfloat16{});
  else throw lcsm::Error("lcsm_capi: dtype must be 0 (float32), 1 (float16) or 2 (bfloat16)");
}

lcsm::LightningAttention make_op(const double* log_decay, long long H, double scale, int exact = 1) {
  lcsm::LightningAttention op;
  op.log_decay.assign(log_decay, log_decay + H);
  op.scale = scale;
  op.precision = exact ? lcsm::Precision::exact : lcsm::Precision::fast;
  return op;
}

// f(op) with the gated descriptor of `kind` over the gate g (device memory).
template <class E, class F>
void with_gated_op(int kind, const float* g, long long B, long long T, long long H, long long K, double scale,
                   int exact, F&& f) {
  const auto precision = exact ? lcsm::Precision::exact : lcsm::Precision::fast;
  if (kind == 0) {
    lcsm::ScalarGatedAttention<E> op;
    op.log_gate = lcsm::view(g, {B, T, H});
    op.scale = scale;
    op.precision = precision;
    f(op);
  } else if (kind == 1) {
    lcsm::VectorGatedAttention<E> op;
    op.log_gate = lcsm::view(g, {B, T, H, K});
    op.scale = scale;
    op.precision = precision;
    f(op);
  } else {
    throw lcsm::Error("lcsm_capi: gate kind must be 0 (scalar) or 1 (vector)");
  }
}

// The Toeplitz convolution: x, y [B, n, C], coefficients [C, n] (causal) or [C, 2n - 1].
template <class E>
lcsm::ToeplitzConvolution<E> toeplitz_op(const void* a, int causal, long long n, long long C) {
  lcsm::ToeplitzConvolution<E> op;
  op.coefficients = lcsm::view(static_cast<const E*>(a), {C, causal ? n : 2 * n - 1});
  op.causal = causal != 0;
  return op;
}

}  // namespace

extern "C" {

// Scratch bytes for lcsm_lightning_forward with these shapes.
long long lcsm_lightning_workspace(int dtype, long long B, long long T, long long H, long long K, long long V) {
  long long bytes = 0;
  dispatch(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    const lcsm::View<const T_, 4> q(nullptr, {B, T, H, K}, lcsm::contiguous_strides<4>({B, T, H, K}));
    const lcsm::View<const T_, 4> v(nullptr, {B, T, H, V}, lcsm::contiguous_strides<4>({B, T, H, V}));
    lcsm::LightningAttention op;
    bytes = static_cast<long long>(lcsm::cuda::forward_workspace_bytes<T_>(op, q, v));
  });
  return bytes;
}

int lcsm_lightning_forward(int dtype, const void* q, const void* k, const void* v, void* o, long long B, long long T,
                           long long H, long long K, long long V, const double* log_decay, double scale,
                           const float* initial_state, float* final_state, void* workspace, long long workspace_bytes,
                           int exact, void* stream, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      const auto op = make_op(log_decay, H, scale, exact);
      lcsm::cuda::Device dev{static_cast<cudaStream_t>(stream), {workspace, static_cast<std::size_t>(workspace_bytes)}};
      lcsm::StateIO<float> st;
      if (initial_state) st.initial = lcsm::view(initial_state, {B, H, K, V});
      if (final_state) st.final = lcsm::view(final_state, {B, H, K, V});
      lcsm::forward<T_>(dev, op, lcsm::view(static_cast<const T_*>(q), {B, T, H, K}),
                        lcsm::view(static_cast<const T_*>(k), {B, T, H, K}),
                        lcsm::view(static_cast<const T_*>(v), {B, T, H, V}),
                        lcsm::view(static_cast<T_*>(o), {B, T, H, V}), st);
    });
  });
}

int lcsm_lightning_step(int dtype, const void* q, const void* k, const void* v, void* o, long long B, long long n,
                        long long H, long long K, long long V, const double* log_decay, double scale, float* state,
                        void* stream, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      const auto op = make_op(log_decay, H, scale);
      lcsm::step<T_>(lcsm::cuda::Device{static_cast<cudaStream_t>(stream), {}}, op,
                     lcsm::view(static_cast<const T_*>(q), {B, n, H, K}),
                     lcsm::view(static_cast<const T_*>(k), {B, n, H, K}),
                     lcsm::view(static_cast<const T_*>(v), {B, n, H, V}), lcsm::view(static_cast<T_*>(o), {B, n, H, V}),
                     lcsm::view(state, {B, H, K, V}));
    });
  });
}

// Scratch bytes for lcsm_gated_forward with these shapes.
long long lcsm_gated_workspace(int kind, int dtype, long long B, long long T, long long H, long long K, long long V) {
  long long bytes = 0;
  dispatch(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    const lcsm::View<const T_, 4> q(nullptr, {B, T, H, K}, lcsm::contiguous_strides<4>({B, T, H, K}));
    const lcsm::View<const T_, 4> v(nullptr, {B, T, H, V}, lcsm::contiguous_strides<4>({B, T, H, V}));
    with_gated_op<T_>(kind, nullptr, B, T, H, K, 1.0, 1, [&](const auto& op) {
      bytes = static_cast<long long>(lcsm::cuda::forward_workspace_bytes<T_>(op, q, v));
    });
  });
  return bytes;
}

int lcsm_gated_forward(int kind, int dtype, const void* q, const void* k, const void* v, const float* g, void* o,
                       long long B, long long T, long long H, long long K, long long V, double scale,
                       const float* initial_state, float* final_state, void* workspace, long long workspace_bytes,
                       int exact, void* stream, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      lcsm::cuda::Device dev{static_cast<cudaStream_t>(stream), {workspace, static_cast<std::size_t>(workspace_bytes)}};
      lcsm::StateIO<float> st;
      if (initial_state) st.initial = lcsm::view(initial_state, {B, H, K, V});
      if (final_state) st.final = lcsm::view(final_state, {B, H, K, V});
      with_gated_op<T_>(kind, g, B, T, H, K, scale, exact, [&](const auto& op) {
        lcsm::forward<T_>(dev, op, lcsm::view(static_cast<const T_*>(q), {B, T, H, K}),
                          lcsm::view(static_cast<const T_*>(k), {B, T, H, K}),
                          lcsm::view(static_cast<const T_*>(v), {B, T, H, V}),
                          lcsm::view(static_cast<T_*>(o), {B, T, H, V}), st);
      });
    });
  });
}

int lcsm_gated_step(int kind, int dtype, const void* q, const void* k, const void* v, const float* g, void* o,
                    long long B, long long n, long long H, long long K, long long V, double scale, float* state,
                    void* stream, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      with_gated_op<T_>(kind, g, B, n, H, K, scale, 1, [&](const auto& op) {
        lcsm::step<T_>(lcsm::cuda::Device{static_cast<cudaStream_t>(stream), {}}, op,
                       lcsm::view(static_cast<const T_*>(q), {B, n, H, K}),
                       lcsm::view(static_cast<const T_*>(k), {B, n, H, K}),
                       lcsm::view(static_cast<const T_*>(v), {B, n, H, V}),
                       lcsm::view(static_cast<T_*>(o), {B, n, H, V}), lcsm::view(state, {B, H, K, V}));
      });
    });
  });
}

// cosFormer forward (ReLU features, M = each sequence's length, no states): scratch bytes, -1 on error.
long long lcsm_cosformer_workspace(int dtype, int causal, long long B, long long T, long long H, long long K,
                                   long long V, char* error, int error_len) {
  long long bytes = -1;
  guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      lcsm::CosFormerAttention op;
      op.causal = causal != 0;
      bytes = static_cast<long long>(
          lcsm::cuda::forward_workspace_bytes<T_>(op, lcsm::view(static_cast<const T_*>(nullptr), {B, T, H, K}),
                                                  lcsm::view(static_cast<const T_*>(nullptr), {B, T, H, V})));
    });
  });
  return bytes;
}

int lcsm_cosformer_forward(int dtype, int causal, const void* q, const void* k, const void* v, void* o, long long B,
                           long long T, long long H, long long K, long long V, void* workspace,
                           long long workspace_bytes, int exact, void* stream, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      lcsm::CosFormerAttention op;
      op.causal = causal != 0;
      op.precision = exact ? lcsm::Precision::exact : lcsm::Precision::fast;
      lcsm::cuda::Device dev{static_cast<cudaStream_t>(stream), {workspace, static_cast<std::size_t>(workspace_bytes)}};
      lcsm::forward<T_>(dev, op, lcsm::view(static_cast<const T_*>(q), {B, T, H, K}),
                        lcsm::view(static_cast<const T_*>(k), {B, T, H, K}),
                        lcsm::view(static_cast<const T_*>(v), {B, T, H, V}),
                        lcsm::view(static_cast<T_*>(o), {B, T, H, V}));
    });
  });
}

// Scratch bytes for lcsm_cosformer_backward (no states); -1 on error (message in `error`).
long long lcsm_cosformer_backward_workspace(int dtype, int causal, long long B, long long T, long long H, long long K,
                                            long long V, char* error, int error_len) {
  long long bytes = -1;
  guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      lcsm::CosFormerAttention op;
      op.causal = causal != 0;
      bytes = static_cast<long long>(
          lcsm::cuda::backward_workspace_bytes<T_>(op, lcsm::view(static_cast<const T_*>(nullptr), {B, T, H, K}),
                                                   lcsm::view(static_cast<const T_*>(nullptr), {B, T, H, V})));
    });
  });
  return bytes;
}

// cosFormer's backward (ReLU, M = T): dq, dk, dv from d_o.
int lcsm_cosformer_backward(int dtype, int causal, const void* q, const void* k, const void* v, const void* d_o,
                            void* dq, void* dk, void* dv, long long B, long long T, long long H, long long K,
                            long long V, void* workspace, long long workspace_bytes, int exact, void* stream,
                            char* error, int error_len) {
  return guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      lcsm::CosFormerAttention op;
      op.causal = causal != 0;
      op.precision = exact ? lcsm::Precision::exact : lcsm::Precision::fast;
      lcsm::cuda::Device dev{static_cast<cudaStream_t>(stream), {workspace, static_cast<std::size_t>(workspace_bytes)}};
      const auto keys = [&](const void* x) { return lcsm::view(static_cast<const T_*>(x), {B, T, H, K}); };
      const auto values = [&](const void* x) { return lcsm::view(static_cast<const T_*>(x), {B, T, H, V}); };
      lcsm::backward<T_>(dev, op, keys(q), keys(k), values(v), values(d_o),
                         lcsm::view(static_cast<T_*>(dq), {B, T, H, K}), lcsm::view(static_cast<T_*>(dk), {B, T, H, K}),
                         lcsm::view(static_cast<T_*>(dv), {B, T, H, V}));
    });
  });
}

// Scratch bytes for lcsm_toeplitz_forward with these tensors; -1 on error (message in `error`).
long long lcsm_toeplitz_workspace(int dtype, int causal, const void* x, const void* a, long long B, long long n,
                                  long long C, char* error, int error_len) {
  long long bytes = -1;
  guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      bytes = static_cast<long long>(lcsm::cuda::forward_workspace_bytes<T_>(
          toeplitz_op<T_>(a, causal, n, C), lcsm::view(static_cast<const T_*>(x), {B, n, C})));
    });
  });
  return bytes;
}

int lcsm_toeplitz_forward(int dtype, int causal, const void* x, const void* a, void* y, long long B, long long n,
                          long long C, void* workspace, long long workspace_bytes, void* stream, char* error,
                          int error_len) {
  return guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      lcsm::cuda::Device dev{static_cast<cudaStream_t>(stream), {workspace, static_cast<std::size_t>(workspace_bytes)}};
      lcsm::forward<T_>(dev, toeplitz_op<T_>(a, causal, n, C), lcsm::view(static_cast<const T_*>(x), {B, n, C}),
                        lcsm::view(static_cast<T_*>(y), {B, n, C}));
    });
  });
}

// The backward of lightning (family 0: `decay` is double log_decay[H], d_decay float [H]), the
// scalar gate (family 1: `decay` is the fp32 gate [B, T, H], d_decay float [B, T, H]) or the vector
// gate (family 2: [B, T, H, K] both); d_decay may be null (no decay gradient). No states. Scratch bytes:
// lcsm_backward_workspace, -1 on error.
long long lcsm_backward_workspace(int family, int dtype, long long B, long long T, long long H, long long K,
                                  long long V, int with_decay_gradient, char* error, int error_len) {
  long long bytes = -1;
  guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      const lcsm::View<const T_, 4> q(nullptr, {B, T, H, K}, lcsm::contiguous_strides<4>({B, T, H, K}));
      const lcsm::View<const T_, 4> v(nullptr, {B, T, H, V}, lcsm::contiguous_strides<4>({B, T, H, V}));
      // The query reads only whether the gradient is present: any non-null view says "wanted".
      float unread = 0;
      float* wanted = with_decay_gradient ? &unread : nullptr;
      if (family == 0) {
        const lcsm::View<float, 1> dg = wanted ? lcsm::view(wanted, {H}) : lcsm::View<float, 1>{};
        bytes =
            static_cast<long long>(lcsm::cuda::backward_workspace_bytes<T_>(lcsm::LightningAttention{}, q, v, {}, dg));
      } else if (family == 1) {
        const lcsm::View<float, 3> dg = wanted ? lcsm::view(wanted, {B, T, H}) : lcsm::View<float, 3>{};
        bytes = static_cast<long long>(
            lcsm::cuda::backward_workspace_bytes<T_>(lcsm::ScalarGatedAttention<T_>{}, q, v, {}, dg));
      } else {
        const lcsm::View<float, 4> dg = wanted ? lcsm::view(wanted, {B, T, H, K}) : lcsm::View<float, 4>{};
        bytes = static_cast<long long>(
            lcsm::cuda::backward_workspace_bytes<T_>(lcsm::VectorGatedAttention<T_>{}, q, v, {}, dg));
      }
    });
  });
  return bytes;
}

int lcsm_backward(int family, int dtype, const void* q, const void* k, const void* v, const void* d_o,
                  const void* decay, void* dq, void* dk, void* dv, float* d_decay, long long B, long long T,
                  long long H, long long K, long long V, double scale, void* workspace, long long workspace_bytes,
                  int exact, void* stream, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    dispatch(dtype, [&](auto tag) {
      using T_ = decltype(tag);
      lcsm::cuda::Device dev{static_cast<cudaStream_t>(stream), {workspace, static_cast<std::size_t>(workspace_bytes)}};
      const auto in = [&](const void* p, long long D) { return lcsm::view(static_cast<const T_*>(p), {B, T, H, D}); };
      const auto out = [&](void* p, long long D) { return lcsm::view(static_cast<T_*>(p), {B, T, H, D}); };
      if (family == 0) {
        const auto op = make_op(static_cast<const double*>(decay), H, scale, exact);
        lcsm::backward<T_>(dev, op, in(q, K), in(k, K), in(v, V), in(d_o, V), out(dq, K), out(dk, K), out(dv, V), {},
                           d_decay ? lcsm::view(d_decay, {H}) : lcsm::View<float, 1>{});
      } else if (family == 1) {
        lcsm::ScalarGatedAttention<T_> op;
        op.log_gate = lcsm::view(static_cast<const float*>(decay), {B, T, H});
        op.scale = scale;
        op.precision = exact ? lcsm::Precision::exact : lcsm::Precision::fast;
        lcsm::backward<T_>(dev, op, in(q, K), in(k, K), in(v, V), in(d_o, V), out(dq, K), out(dk, K), out(dv, V), {},
                           d_decay ? lcsm::view(d_decay, {B, T, H}) : lcsm::View<float, 3>{});
      } else {
        lcsm::VectorGatedAttention<T_> op;
        op.log_gate = lcsm::view(static_cast<const float*>(decay), {B, T, H, K});
        op.scale = scale;
        op.precision = exact ? lcsm::Precision::exact : lcsm::Precision::fast;
        lcsm::backward<T_>(dev, op, in(q, K), in(k, K), in(v, V), in(d_o, V), out(dq, K), out(dk, K), out(dv, V), {},
                           d_decay ? lcsm::view(d_decay, {B, T, H, K}) : lcsm::View<float, 4>{});
      }
    });
  });
}

}  // extern "C"
