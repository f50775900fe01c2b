// A C ABI over lcsm's CUDA lightning attention, so the peers script (Python, ctypes) can run it
// on PyTorch tensors in the same process as fla and SDPA. Contiguous [B, T, H, D] tensors only.
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
  op.precision = exact ? lcsm::LightningAttention::Precision::exact : lcsm::LightningAttention::Precision::fast;
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

}  // extern "C"
