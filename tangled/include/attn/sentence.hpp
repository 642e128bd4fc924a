// Generated from chapters/02-masked-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Words of a sentence and their fixed
/// random embeddings, for the chapters' examples.

#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "attn/random.hpp"

namespace attn {

// ⟨Give each word a fixed random embedding⟩ 02-masked-attention.md:340
/// @brief Split `text` at spaces into tokens.
inline std::vector<std::string> split_words(const std::string& text)
{
    std::istringstream stream(text);
    std::vector<std::string> words;
    for (std::string word; stream >> word;) words.push_back(word);
    return words;
}

/// @brief One N(0, 1) embedding row per token, drawn
/// from a generator seeded by the word and `seed`.
/// @param tokens n words; @param d_model width of an embedding
/// @return X, n×d_model; equal words get equal rows
template <class T>
xt::xtensor<T, 2> embed_words(const std::vector<std::string>& tokens,
                              std::size_t d_model, std::uint64_t seed)
{
    xt::xtensor<T, 2> X = xt::zeros<T>({tokens.size(), d_model});  // n×d_model
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        std::mt19937_64 word_rng(seed ^ std::hash<std::string>{}(tokens[i]));
        xt::row(X, i) = xt::row(random_normal<T>(1, d_model, 1.0, word_rng), 0);
    }
    return X;
}

}  // namespace attn
