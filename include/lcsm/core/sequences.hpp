// Variable-length batches: cu_seqlens offsets over a packed [1, total, H, D] batch.
#pragma once

#include <cstdint>
#include <string>

#include "lcsm/core/error.hpp"
#include "lcsm/core/tensor.hpp"

namespace lcsm {

// N + 1 offsets, int32 or int64, as FlashAttention and fla take them. Sequence n covers tokens
// [offsets[n], offsets[n+1]) of the packed batch. Default-constructed: absent (no varlen).
// The pointer is read where the backend runs: host memory for the CPU backend.
class CuSeqlens {
 public:
  CuSeqlens() = default;
  CuSeqlens(const std::int32_t* data, index_t count) : data32_(data), count_(count) {}
  CuSeqlens(const std::int64_t* data, index_t count) : data64_(data), count_(count) {}
  CuSeqlens(View<const std::int32_t, 1> v) : CuSeqlens(v.data(), v.size(0)) { stride_ = v.stride(0); }
  CuSeqlens(View<const std::int64_t, 1> v) : CuSeqlens(v.data(), v.size(0)) { stride_ = v.stride(0); }

  bool present() const { return count_ > 0 || data32_ || data64_; }
  index_t count() const { return count_; }  // N + 1
  index_t num_sequences() const { return count_ - 1; }
  bool is_int64() const { return data64_ != nullptr; }
  const void* data() const { return data64_ ? static_cast<const void*>(data64_) : data32_; }
  index_t stride() const { return stride_; }
  index_t operator[](index_t i) const {
    return data64_ ? data64_[i * stride_] : static_cast<index_t>(data32_[i * stride_]);
  }

 private:
  const std::int32_t* data32_ = nullptr;
  const std::int64_t* data64_ = nullptr;
  index_t count_ = 0;
  index_t stride_ = 1;
};

// One sequence of a batch: batch row, first token, length.
struct Sequence {
  index_t batch;
  index_t start;
  index_t length;
};

// The sequences of a [B, T, ...] batch: B rows of length T, or the cu_seqlens segments of row 0.
class Sequences {
 public:
  Sequences(index_t batch, index_t time, const CuSeqlens& cu) : batch_(batch), time_(time), cu_(cu) {}
  index_t size() const { return cu_.present() ? cu_.num_sequences() : batch_; }
  Sequence operator[](index_t n) const {
    if (!cu_.present()) return {n, 0, time_};
    const index_t start = cu_[n];
    return {0, start, cu_[n + 1] - start};
  }

 private:
  index_t batch_, time_;
  CuSeqlens cu_;
};

}  // namespace lcsm
