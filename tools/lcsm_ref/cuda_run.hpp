// `run --device cuda` (cuda_run.cu, compiled where lcsm-ref is built with CUDA: LCSM_REF_CUDA).
#pragma once

#include <string>
#include <vector>

#include "cpu_run.hpp"

namespace lcsm::ref {

// The current device's name; a ToolError where there is none (or lcsm-ref was built without CUDA).
std::string cuda_device_name();

// What the CUDA backend lacks for this problem ("" when it has it all).
std::string cuda_lacks(const Descriptor& d);

// The problem's outputs as lcsm's CUDA backend computes them (the families and directions it has;
// a ToolError names what it lacks).
std::vector<Tensor64> run_cuda(const Problem& problem, Stopwatch& watch);

}  // namespace lcsm::ref
