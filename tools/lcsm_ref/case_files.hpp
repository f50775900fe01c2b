// A problem on disk: DIR/manifest.json (the problem, layouts, conventions, tolerance policy),
// DIR/inputs/<name>.npy and DIR/reference/<name>.npy (float64). `generate` writes it, `check`
// reads it back; nothing else is needed to judge a port's outputs.
#pragma once

#include <string>
#include <vector>

#include "problem.hpp"

namespace lcsm::ref {

void write_case(const std::string& dir, const Problem& problem);

struct LoadedCase {
  std::string dir, descriptor;
  std::vector<Expected> outputs;  // references, dtypes and rules read back from the files
};

LoadedCase load_case(const std::string& dir);

// The cases of a batch directory (DIR/index.json lists them), or empty for a single case.
std::vector<std::string> batch_cases(const std::string& dir);
void write_batch_index(const std::string& dir, const std::vector<std::string>& cases,
                       const std::vector<std::string>& descriptors);

}  // namespace lcsm::ref
