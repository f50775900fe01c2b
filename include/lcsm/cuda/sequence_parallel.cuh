// Sequence parallelism across GPUs over NCCL (LASP-2 style; docs/sequence-parallel.md): the
// component lcsm::nccl (find_package(lcsm COMPONENTS nccl)). Each rank holds a contiguous slice of
// the same B sequences, in rank order along time; one all-gather of the slices' state contributions
// per call. The caller owns the communicator and the stream: nothing here creates a communicator or
// synchronises the host. Include from a .cu file.
//
//   lcsm::cuda::Device dev{stream, {workspace, lcsm::cuda::sequence_parallel::forward_workspace_bytes(op, q, v,
//   ranks)}}; lcsm::cuda::sequence_parallel::forward<__nv_bfloat16>(dev, comm, op, q, k, v, o, {initial, final});
//
// The algorithm itself is written against lcsm::cuda::sequence_parallel::Collective
// (sequence_parallel/forward.cuh), which needs no NCCL.
#pragma once

#include <nccl.h>

#include <string>

#include "lcsm/core/error.hpp"
#include "lcsm/cuda/sequence_parallel/backward.cuh"
#include "lcsm/cuda/sequence_parallel/forward.cuh"

namespace lcsm::cuda::sequence_parallel {

// An NCCL communicator as the Collective: its rank and size, ncclAllGather on the caller's stream.
class NcclCollective final : public Collective {
 public:
  explicit NcclCollective(ncclComm_t comm) : comm_(comm) {
    if (comm == nullptr)
      throw Error("lcsm::cuda::sequence_parallel: argument 'comm': expected an NCCL communicator, got null");
    check(ncclCommUserRank(comm, &rank_), "ncclCommUserRank");
    check(ncclCommCount(comm, &size_), "ncclCommCount");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_gather(const void* send, void* recv, std::size_t bytes, cudaStream_t stream) override {
    check(ncclAllGather(send, recv, bytes, ncclUint8, comm_, stream), "ncclAllGather");
  }

 private:
  static void check(ncclResult_t r, const char* what) {
    if (r != ncclSuccess && r != ncclInProgress)
      throw Error(std::string("lcsm::cuda::sequence_parallel: ") + what + " failed: " + ncclGetErrorString(r));
  }
  ncclComm_t comm_;
  int rank_ = 0, size_ = 1;
};

template <class T, class Op>
void forward(const Device& device, ncclComm_t comm, const Op& op, lcsm::detail::identity_t<View<const T, 4>> q,
             lcsm::detail::identity_t<View<const T, 4>> k, lcsm::detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<float>& state = {}) {
  NcclCollective c(comm);
  forward<T>(device, static_cast<Collective&>(c), op, q, k, v, o, state);
}

template <class T, class Op, class DG>
void backward(const Device& device, ncclComm_t comm, const Op& op, lcsm::detail::identity_t<View<const T, 4>> q,
              lcsm::detail::identity_t<View<const T, 4>> k, lcsm::detail::identity_t<View<const T, 4>> v,
              lcsm::detail::identity_t<View<const T, 4>> d_o, lcsm::detail::identity_t<View<T, 4>> dq,
              lcsm::detail::identity_t<View<T, 4>> dk, lcsm::detail::identity_t<View<T, 4>> dv,
              const StateGrads<float>& states, DG d_log_decay) {
  NcclCollective c(comm);
  backward<T>(device, static_cast<Collective&>(c), op, q, k, v, d_o, dq, dk, dv, states, d_log_decay);
}

}  // namespace lcsm::cuda::sequence_parallel
