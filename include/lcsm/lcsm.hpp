// lcsm: linear-complexity sequence operators. The CPU side: views, descriptors, the float64
// reference and the Eigen backend. For the GPU, include <lcsm/cuda.cuh> from a .cu file.
#pragma once

#include "lcsm/core/decay.hpp"
#include "lcsm/core/dtype.hpp"
#include "lcsm/core/error.hpp"
#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/cpu/cosformer.hpp"
#include "lcsm/cpu/device.hpp"
#include "lcsm/cpu/gated.hpp"
#include "lcsm/cpu/lightning.hpp"
#include "lcsm/cpu/toeplitz.hpp"
#include "lcsm/ops/lightning.hpp"
#include "lcsm/ops/problem.hpp"
#include "lcsm/reference/cosformer.hpp"
#include "lcsm/reference/eos.hpp"
#include "lcsm/reference/lightning.hpp"
