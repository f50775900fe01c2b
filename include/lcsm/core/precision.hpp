// How tensor-core backends round the products that feed the state and the output.
#pragma once

namespace lcsm {

// `exact` keeps about 16 mantissa bits in every product that feeds the state or the output (a
// hi + lo bf16 split of the state, the decayed operands and the scores); `fast` rounds them to
// bf16 once, as flash-linear-attention does, for fewer matrix instructions. The CPU backend always
// computes in the input's precision and ignores it.
enum class Precision { exact, fast };

}  // namespace lcsm
