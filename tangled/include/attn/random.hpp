// Generated from chapters/01-self-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Reproducible random matrices for the programs and tests.

#include <cstddef>
#include <random>

#include <xtensor/xtensor.hpp>

namespace attn {

// ⟨Draw a random normal matrix⟩ 01-self-attention.md:477
/// @brief A rows×cols matrix of independent N(0, stddev²) entries.
/// Draws in double, so float and double matrices from the same generator agree.
template <class T>
xt::xtensor<T, 2> random_normal(std::size_t rows, std::size_t cols, double stddev,
                                std::mt19937_64& rng)
{
    std::normal_distribution<double> normal(0.0, stddev);
    xt::xtensor<T, 2> x = xt::zeros<T>({rows, cols});
    for (T& value : x) value = static_cast<T>(normal(rng));
    return x;
}

}  // namespace attn
