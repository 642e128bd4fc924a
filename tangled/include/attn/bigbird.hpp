// Generated from chapters/09-bigbird.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 9: BigBird attention — blocks of window, global and random attention.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "attn/longformer.hpp"
#include "attn/masked_attention.hpp"
#include "attn/self_attention.hpp"

namespace attn {

// ⟨Describe a BigBird pattern⟩ 09-bigbird.md:42
/// @brief A BigBird attention pattern over blocks
/// of `block` tokens (Zaheer et al. 2020).
struct BigBirdPattern {
    std::size_t block;          ///< tokens per block, b ≥ 1; n must be a multiple of it
    std::size_t random_blocks;  ///< random key blocks per non-global query block, r;
                                ///< more than the blocks left is clamped to them
    std::uint64_t
        seed;  ///< seed of the random draws: the same seed gives the same pattern
};

// ⟨Check that n is a whole number of blocks⟩ 09-bigbird.md:57
/// @brief Throw std::invalid_argument unless n is a positive multiple of pattern.block.
inline void check_bigbird_length(std::size_t n, const BigBirdPattern& pattern,
                                 const std::string& who)
{
    if (pattern.block == 0)
        throw std::invalid_argument(who + ": the block size must be at least 1");
    if (n == 0) throw std::invalid_argument(who + ": there are no tokens (n = 0)");
    if (n % pattern.block != 0) {
        const std::size_t padded = (n / pattern.block + 1) * pattern.block;
        throw std::invalid_argument(
            who + ": n = " + std::to_string(n) +
            " is not a multiple of the block size " + std::to_string(pattern.block) +
            "; pad the sequence to " + std::to_string(padded) + " tokens");
    }
}

// ⟨List the key blocks of every query block⟩ 09-bigbird.md:86
/// @brief The block-level BigBird pattern: for each query block, the sorted
/// key blocks it attends. Blocks 0 and n_blocks − 1 are global (attend all
/// blocks; attended by all). Every other block q attends q − 1, q, q + 1, the
/// two global blocks and `random_blocks` further blocks drawn from the seed.
/// @param n_blocks number of blocks, n / block, ≥ 1
/// @return n_blocks lists of key-block indices
inline std::vector<std::vector<std::size_t>> bigbird_key_blocks(
    std::size_t n_blocks, const BigBirdPattern& pattern)
{
    std::mt19937_64 rng(pattern.seed);
    std::vector<std::vector<std::size_t>> key_blocks(n_blocks);
    const std::size_t last = n_blocks - 1;
    for (std::size_t q = 0; q < n_blocks; ++q) {
        // a global block attends every block
        std::vector<bool> attends(n_blocks, q == 0 || q == last);
        if (q != 0 && q != last) {
            for (std::size_t k : {std::size_t(0), q - 1, q, q + 1, last})
                attends[k] = true;
            // ⟨Draw the random blocks of query block q⟩ 09-bigbird.md:114
            std::vector<std::size_t> others;  // blocks q does not attend yet
            for (std::size_t k = 0; k < n_blocks; ++k)
                if (!attends[k]) others.push_back(k);
            const std::size_t draws = std::min(pattern.random_blocks, others.size());
            // partial Fisher–Yates: others[0, draws) become a random sample
            for (std::size_t d = 0; d < draws; ++d) {
                const std::size_t pick = d + static_cast<std::size_t>(rng() % (others.size() - d));
                std::swap(others[d], others[pick]);
                attends[others[d]] = true;
            }
        }
        for (std::size_t k = 0; k < n_blocks; ++k)
            if (attends[k]) key_blocks[q].push_back(k);
    }
    return key_blocks;
}

// ⟨Build the BigBird mask⟩ 09-bigbird.md:130
/// @brief BigBird's attention pattern as a dense n×n mask
/// (for figures and tests; the kernel never builds it).
/// @param n       number of tokens, a multiple of
/// pattern.block (std::invalid_argument otherwise)
/// @param pattern block size, random blocks per query block, seed
/// @return mask, n×n, true where query i may attend
/// key j; constant on every block×block tile
inline Mask bigbird_mask(std::size_t n, const BigBirdPattern& pattern)
{
    check_bigbird_length(n, pattern, "bigbird_mask");
    const std::size_t b = pattern.block;
    const auto key_blocks = bigbird_key_blocks(n / b, pattern);
    Mask mask = xt::zeros<bool>({n, n});  // n×n
    for (std::size_t q = 0; q < key_blocks.size(); ++q)
        for (std::size_t k : key_blocks[q])
            for (std::size_t i = q * b; i < (q + 1) * b; ++i)
                for (std::size_t j = k * b; j < (k + 1) * b; ++j) mask(i, j) = true;
    return mask;
}

// ⟨List a block's tokens⟩ 09-bigbird.md:205
/// The token positions of the listed blocks, block
/// after block: blocks.size()·block positions.
inline std::vector<std::size_t> block_positions(const std::vector<std::size_t>& blocks,
                                                std::size_t block)
{
    std::vector<std::size_t> positions;
    positions.reserve(blocks.size() * block);
    for (std::size_t k : blocks)
        for (std::size_t j = k * block; j < (k + 1) * block; ++j)
            positions.push_back(j);
    return positions;
}

// ⟨Compute BigBird attention⟩ 09-bigbird.md:220
/// @brief BigBird block-sparse attention (Zaheer et al. 2020): window,
/// global and random blocks. Equals scaled_dot_product_attention(Q, K, V,
/// bigbird_mask(n, pattern)) but never builds an n×n matrix: each query
/// block attends its gathered key blocks with two small dense products,
/// O(n·(7 + r)·b·d) time, O(b·n) memory for the scores of a global block.
/// @param Q       queries, n×d_k
/// @param K       keys, n×d_k
/// @param V       values, n×d_v
/// @param pattern block size b (n must be a multiple of it), random blocks r, seed
/// @param visits  optional: adds the query–key scores computed (chapter 6's KeyVisits)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> bigbird_attention(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K,
                                    const xt::xtensor<T, 2>& V,
                                    const BigBirdPattern& pattern,
                                    KeyVisits* visits = nullptr)
{
    check_attention_shapes(Q, K, V);
    const std::size_t n = Q.shape(0), b = pattern.block;
    if (K.shape(0) != n)
        throw std::invalid_argument(
            "bigbird_attention: the pattern is over one sequence, so K needs n = " +
            std::to_string(n) + " rows, not " + std::to_string(K.shape(0)));
    check_bigbird_length(n, pattern, "bigbird_attention");
    const auto key_blocks = bigbird_key_blocks(n / b, pattern);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, V.shape(1)});  // n×d_v
    const auto every_pair = [](std::size_t, std::size_t) { return true; };
    for (std::size_t q = 0; q < key_blocks.size(); ++q) {
        const std::vector<std::size_t> queries = block_positions({q}, b);         // b
        const std::vector<std::size_t> keys = block_positions(key_blocks[q], b);
        detail::attend_listed(Q, K, V, queries, keys, every_pair, O, visits);
    }
    return O;
}

}  // namespace attn
