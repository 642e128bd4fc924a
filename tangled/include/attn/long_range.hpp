// Generated from chapters/14-efficiency-zoo.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 14: chapter 4's tiny model with any mechanism of the zoo in place of
/// dense attention, and the associative-recall tasks of the long-range benchmark.

#include <algorithm>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/machine.hpp"
#include "attn/tiny_model.hpp"
#include "attn/zoo.hpp"

namespace attn {

// ⟨Attend with any mechanism's weights in every head⟩ 14-efficiency-zoo.md:954
/// @brief A mechanism as the attention of each head of chapter 4's layer: the weights
/// of the last `rows` queries are `weights_of`'s (dense attention: attention_weights),
/// the other queries' are zero. Its backward pass is softmax attention's (below),
/// on those rows.
struct MechanismAttention {
    MechanismAttention(WeightsOf weights_of, std::size_t rows)
        : weights_of(std::move(weights_of)), rows(rows)
    {
    }
    /// @brief One head's weights. @param Q n×d_k; @param K n×d_k @return P, n×n
    xt::xtensor<float, 2> weights(const xt::xtensor<float, 2>& Q,
                                  const xt::xtensor<float, 2>& K) const
    {
        const std::size_t n = Q.shape(0);
        if (rows > n)
            throw std::invalid_argument("MechanismAttention: more rows than queries");
        const std::size_t first = n - rows;
        const xt::xtensor<float, 2> asking =
            xt::view(Q, xt::range(first, n), xt::all());                 // rows×d_k
        xt::xtensor<float, 2> P = xt::zeros<float>({n, K.shape(0)});   // n×n
        xt::view(P, xt::range(first, n), xt::all()) = weights_of(asking, K);
        return P;
    }
    /// @brief One head's backward pass, through the last `rows` queries only: the
    /// other rows of P are zero, so they add nothing to dK and dV, and get dQ = 0.
    /// @param Q n×d_k; @param K n×d_k; @param V n×d_v; @param P n×n; @param dO n×d_v
    AttentionGradients<float> backward(const xt::xtensor<float, 2>& Q,
                                       const xt::xtensor<float, 2>& K,
                                       const xt::xtensor<float, 2>& V,
                                       const xt::xtensor<float, 2>& P,
                                       const xt::xtensor<float, 2>& dO) const
    {
        const std::size_t n = Q.shape(0), first = n - rows;
        auto last_rows = [&](const xt::xtensor<float, 2>& X) -> xt::xtensor<float, 2> {
            return xt::view(X, xt::range(first, n), xt::all());  // rows×columns
        };
        AttentionGradients<float> grad =
            attention_backward(last_rows(Q), K, V, last_rows(P), last_rows(dO));
        xt::xtensor<float, 2> dQ = xt::zeros<float>(Q.shape());  // n×d_k
        xt::view(dQ, xt::range(first, n), xt::all()) = grad.dQ;
        grad.dQ = dQ;
        return grad;
    }
    WeightsOf weights_of;  ///< the mechanism's weights of some queries over all keys
    std::size_t rows;      ///< how many of the last queries attend
};

// ⟨Make associative-recall examples⟩ 14-efficiency-zoo.md:1037
/// @brief The vocabulary of the recall tasks: fillers, pairs (key, value), questions.
struct RecallVocabulary {
    static constexpr std::size_t fillers = 16, keys = 8, values = 8;
    static constexpr std::size_t pair(std::size_t key, std::size_t value)
    {
        return fillers + key * values + value;
    }
    static constexpr std::size_t question(std::size_t key)
    {
        return fillers + keys * values + key;
    }
    static constexpr std::size_t size = fillers + keys * values + keys;
};

/// @brief One example: n tokens, and the answer at each of the last `keys` positions.
struct RecallExample {
    std::vector<std::size_t> tokens;   ///< n ids
    std::vector<std::size_t> answers;  ///< the pair token each question asks for
};

/// @brief Draw an example of n tokens: eight pairs among fillers (anywhere if `far`,
/// else just before the questions), then one question per key in random order.
inline RecallExample recall_example(std::size_t n, bool far, std::mt19937_64& rng)
{
    using V = RecallVocabulary;
    if (n < 2 * V::keys)
        throw std::invalid_argument("recall_example: need n ≥ 16 tokens");
    const std::size_t body = n - V::keys;  // positions before the questions
    std::uniform_int_distribution<std::size_t> filler(0, V::fillers - 1),
        value(0, V::values - 1);
    RecallExample example;
    for (std::size_t i = 0; i < body; ++i) example.tokens.push_back(filler(rng));
    std::vector<std::size_t> slots(far ? body : V::keys), order(V::keys);
    for (std::size_t s = 0; s < slots.size(); ++s) slots[s] = body - slots.size() + s;
    std::shuffle(slots.begin(), slots.end(), rng);  // the first eight are used
    for (std::size_t key = 0; key < V::keys; ++key) order[key] = key;
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<std::size_t> pair_of(V::keys);
    for (std::size_t key = 0; key < V::keys; ++key) {
        pair_of[key] = V::pair(key, value(rng));
        example.tokens[slots[key]] = pair_of[key];
    }
    for (std::size_t key : order) {
        example.tokens.push_back(V::question(key));
        example.answers.push_back(pair_of[key]);
    }
    return example;
}

// ⟨Score the answers to the questions⟩ 14-efficiency-zoo.md:1092
/// @brief Cross-entropy (summed) and right answers over the question positions, and
/// d loss/d logits (n×vocab, zero outside the questions).
inline SequenceLoss<float> score_answers(const xt::xtensor<float, 2>& logits,
                                         const std::vector<std::size_t>& answers)
{
    const std::size_t n = logits.shape(0), q = answers.size();
    const xt::xtensor<float, 2> asked =
        xt::view(logits, xt::range(n - q, n), xt::all());  // q×vocab
    SequenceLoss<float> scored = cross_entropy(asked, answers);  // q×vocab
    xt::xtensor<float, 2> d_logits = xt::zeros<float>(logits.shape());
    xt::view(d_logits, xt::range(n - q, n), xt::all()) = scored.d_logits;
    scored.d_logits = d_logits;
    return scored;
}

// ⟨Train the model on a recall task⟩ 14-efficiency-zoo.md:1116
/// @brief Train `model` with Adam on the recall task, its attention given by
/// `weights_of`; every example comes from `rng`.
inline void train_recall(TinyModel<float>& model, bool far, const WeightsOf& weights_of,
                         const TrainingConfig& config, std::mt19937_64& rng)
{
    const BlasThreads one_thread(1);
    const MechanismAttention attention(weights_of, RecallVocabulary::keys);
    Adam<float> adam(model, config.learning_rate);
    const float weight = 1.0f / float(config.batch * RecallVocabulary::keys);
    for (std::size_t step = 0; step < config.steps; ++step) {
        TinyModel<float> grad = zero_model<float>(model.shape);
        for (std::size_t b = 0; b < config.batch; ++b) {
            const RecallExample example = recall_example(model.shape.n, far, rng);
            const TinyModelForward<float> f =
                model_forward(model, example.tokens, attention);
            SequenceLoss<float> scored = score_answers(f.logits, example.answers);
            scored.d_logits *= weight;
            model_backward(model, example.tokens, f, scored.d_logits, grad, attention);
        }
        adam.step(model, grad);
    }
}

/// @brief The fraction of questions answered right on `count` fresh examples.
inline double recall_accuracy(const TinyModel<float>& model, bool far,
                              const WeightsOf& weights_of, std::size_t count,
                              std::mt19937_64& rng)
{
    const BlasThreads one_thread(1);
    const MechanismAttention attention(weights_of, RecallVocabulary::keys);
    std::size_t right = 0;
    for (std::size_t s = 0; s < count; ++s) {
        const RecallExample example = recall_example(model.shape.n, far, rng);
        const TinyModelForward<float> f =
            model_forward(model, example.tokens, attention);
        right += score_answers(f.logits, example.answers).correct;
    }
    return double(right) / double(count * RecallVocabulary::keys);
}

// ⟨Create the model for a recall task⟩ 14-efficiency-zoo.md:1169
/// @brief A one-layer, two-head tiny model for recall sequences of n tokens, pair
/// embeddings started as key vector + value vector, position embeddings at zero.
inline TinyModel<float> recall_model(std::size_t n, std::mt19937_64& rng)
{
    using V = RecallVocabulary;
    const TinyModelShape shape{V::size, n, 32, 2, 1};
    TinyModel<float> model = init_tiny_model<float>(shape, rng);
    model.position_embedding.fill(0.0f);
    const xt::xtensor<float, 2> key = random_normal<float>(V::keys, 32, 1.0, rng),
                                value = random_normal<float>(V::values, 32, 1.0, rng);
    for (std::size_t a = 0; a < V::keys; ++a)
        for (std::size_t b = 0; b < V::values; ++b)
            xt::row(model.token_embedding, V::pair(a, b)) =
                xt::row(key, a) + xt::row(value, b);
    return model;
}

}  // namespace attn
