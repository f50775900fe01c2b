// The three commands. Each returns the process's exit status: 0 everything passed (or was
// written), 1 some output is over its tolerance; errors throw ToolError (main() exits with 2).
#pragma once

#include <string>
#include <vector>

#include "descriptor.hpp"

namespace lcsm::ref {

// The descriptors of a command: the words of one, or the lines of a batch file (not both).
std::vector<Descriptor> descriptors_of(const std::vector<std::string>& words, const std::string& batch);

int generate_command(const std::string& dir, const std::vector<Descriptor>& problems);
int check_command(const std::string& dir, const std::vector<std::string>& files);
// cuda: lcsm's CUDA backend instead of its CPU backend (`--device cuda`).
int run_command(const std::vector<Descriptor>& problems, int threads, int repeats, bool cuda);

}  // namespace lcsm::ref
