// lcsm's CUDA backend: include from a .cu file and link lcsm::cuda. Needs the CUDA Toolkit only
// (no Eigen): it brings the views, descriptors and decay helpers, not the CPU backend.
#pragma once

#include "lcsm/core/decay.hpp"
#include "lcsm/core/dtype.hpp"
#include "lcsm/core/error.hpp"
#include "lcsm/core/precision.hpp"
#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/cuda/cosformer.cuh"
#include "lcsm/cuda/device.cuh"
#include "lcsm/cuda/dtype.cuh"
#include "lcsm/cuda/error.cuh"
#include "lcsm/cuda/gated.cuh"
#include "lcsm/cuda/lightning.cuh"
#include "lcsm/cuda/toeplitz.cuh"
#include "lcsm/ops/cosformer.hpp"
#include "lcsm/ops/gated.hpp"
#include "lcsm/ops/lightning.hpp"
#include "lcsm/ops/problem.hpp"
#include "lcsm/ops/toeplitz.hpp"
