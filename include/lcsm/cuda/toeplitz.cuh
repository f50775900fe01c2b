// The Toeplitz long convolution (TNN) on CUDA: forward, backward (dx, da) and decode over a
// caller-kept history, bf16 / fp16 / fp32 inputs with fp32 accumulation. Include from a .cu file;
// link lcsm::cuda (which brings CUDA::cufft).
//
//   lcsm::ToeplitzConvolution<__nv_bfloat16> op;
//   op.coefficients = lcsm::view(a, {C, n});                 // device memory
//   std::size_t bytes = lcsm::cuda::forward_workspace_bytes(op, x);
//   lcsm::cuda::Device dev{stream, {workspace_ptr, bytes}};
//   lcsm::forward<__nv_bfloat16>(dev, op, x, y);             // x, y [B, n, C]
//
// As the other CUDA families: device memory, the caller's stream and workspace, no host
// synchronisation, cu_seqlens contents unread on the host (each sequence is transformed at the
// coefficients' length; a sequence longer than op.length() is computed only over its first
// op.length() tokens). The FFT path runs cuFFT (plans are made once per shape and kept), or for
// the forward the library's fused FFT convolution (toeplitz/fused.cuh; Device::kernels); the direct
// path (op.use_fft false) needs no workspace. Non-finite values reach exactly the outputs whose sums
// hold them, as on the CPU: their columns are recomputed by direct sums.
#pragma once

#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/dtype.cuh"
#include "lcsm/cuda/toeplitz/run.cuh"
#include "lcsm/ops/toeplitz.hpp"

namespace lcsm {
namespace cuda {

// Scratch bytes a forward call with these shapes needs on the current device (0: none), for a call
// whose Device::kernels is `kernels`. x and the coefficients are checked as the call checks them
// (their memory too: pass the call's views). Makes the cuFFT plans the call will use (so a call after
// it makes none, e.g. inside a graph capture).
template <class T>
std::size_t forward_workspace_bytes(const ToeplitzConvolution<T>& op, View<const T, 3> x,
                                    const CuSeqlens& cu_seqlens = {}, Kernels kernels = Kernels::automatic) {
  const char* where = "lcsm::cuda::forward_workspace_bytes(ToeplitzConvolution)";
  lcsm::detail::Operands ops(where);
  const auto p = lcsm::detail::check_toeplitz_operands(where, op, x, cu_seqlens, ops, lcsm::detail::OffsetsAt::device);
  return detail::plan_toeplitz(where, op, p, detail::ToeplitzEntry::forward, false, false, kernels).bytes;
}

// The same for a backward call computing dx and / or da.
template <class T>
std::size_t backward_workspace_bytes(const ToeplitzConvolution<T>& op, View<const T, 3> x, bool want_dx, bool want_da,
                                     const CuSeqlens& cu_seqlens = {}) {
  const char* where = "lcsm::cuda::backward_workspace_bytes(ToeplitzConvolution)";
  lcsm::detail::Operands ops(where);
  const auto p = lcsm::detail::check_toeplitz_operands(where, op, x, cu_seqlens, ops, lcsm::detail::OffsetsAt::device);
  if (!want_dx && !want_da) return 0;
  return detail::plan_toeplitz(where, op, p, detail::ToeplitzEntry::backward, want_dx, want_da, Kernels::automatic)
      .bytes;
}

}  // namespace cuda

// y = Toeplitz(op.coefficients) x per channel (ops/toeplitz.hpp), on the device's stream.
template <class T>
void forward(const cuda::Device& device, const ToeplitzConvolution<T>& op, detail::identity_t<View<const T, 3>> x,
             View<T, 3> y, const CuSeqlens& cu_seqlens = {}) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA Toeplitz convolution takes float, __half or __nv_bfloat16");
  const char* where = "lcsm::forward(cuda, ToeplitzConvolution)";
  const auto p = detail::check_toeplitz_forward(where, op, x, y, cu_seqlens, detail::OffsetsAt::device);
  if (p.batch == 0 || p.time == 0) return;  // no tokens: nothing to plan
  const auto plan =
      cuda::detail::plan_toeplitz(where, op, p, cuda::detail::ToeplitzEntry::forward, false, false, device.kernels);
  cuda::detail::check_toeplitz_workspace(where, device, plan, "lcsm::cuda::forward_workspace_bytes");
  cuda::detail::run_toeplitz_forward<T>(cuda::detail::toeplitz_params(op, p, cu_seqlens, plan, device), plan, x, y,
                                        device);
}

// Gradients dx [B, n, C] and da (the shape of op.coefficients, summed over sequences; entries no
// sequence reaches are 0); either may be absent.
template <class T>
void backward(const cuda::Device& device, const ToeplitzConvolution<T>& op, detail::identity_t<View<const T, 3>> x,
              detail::identity_t<View<const T, 3>> dy, detail::identity_t<View<T, 3>> dx, View<T, 2> da,
              const CuSeqlens& cu_seqlens = {}) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA Toeplitz convolution takes float, __half or __nv_bfloat16");
  const char* where = "lcsm::backward(cuda, ToeplitzConvolution)";
  const auto p = detail::check_toeplitz_backward(where, op, x, dy, dx, da, cu_seqlens, detail::OffsetsAt::device);
  if (!dx.present() && !da.present()) return;
  if (p.batch == 0 || p.time == 0) {  // no tokens: da = 0
    if (da.numel() > 0) cuda::detail::zero_coefficient_grad<T>(da, device.stream);
    return;
  }
  const auto plan = cuda::detail::plan_toeplitz(where, op, p, cuda::detail::ToeplitzEntry::backward, dx.present(),
                                                da.present(), device.kernels);
  cuda::detail::check_toeplitz_workspace(where, device, plan, "lcsm::cuda::backward_workspace_bytes");
  cuda::detail::run_toeplitz_backward<T>(cuda::detail::toeplitz_params(op, p, cu_seqlens, plan, device), plan, x, dy,
                                         dx, da, device);
}

// Decode with the causal form (as the CPU's step): the m tokens of x_t go into history.inputs at
// rows position .. position + m - 1 and y_t sums over the whole history; advances history.position.
template <class T>
void step(const cuda::Device& device, const ToeplitzConvolution<T>& op, detail::identity_t<View<const T, 3>> x_t,
          View<T, 3> y_t, ToeplitzHistory<T>& history) {
  static_assert(cuda::detail::is_cuda_input_v<T>, "CUDA Toeplitz convolution takes float, __half or __nv_bfloat16");
  const char* where = "lcsm::step(cuda, ToeplitzConvolution)";
  const auto p = detail::check_toeplitz_step(where, op, x_t, y_t, history);
  if (p.batch == 0 || p.time == 0) return;
  const cuda::detail::ToeplitzPlan none;
  cuda::detail::run_toeplitz_step<T>(cuda::detail::toeplitz_params(op, p, CuSeqlens{}, none, device), x_t, y_t,
                                     history.inputs, history.position, device.stream);
  history.position += p.time;
}

}  // namespace lcsm
