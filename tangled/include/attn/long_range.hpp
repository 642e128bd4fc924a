// Generated from chapters/14-efficiency-zoo.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 14: chapter 4's tiny model with any mechanism of the zoo in place of
/// dense attention, and the associative-recall tasks of the long-range benchmark.

#include <algorithm>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/machine.hpp"
#include "attn/tiny_model.hpp"
#include "attn/zoo.hpp"

namespace attn {

// ⟨Run an attention layer with any mechanism's weights⟩ 14-efficiency-zoo.md:965
/// @brief Chapter 4's attention_layer_forward with the weights of every head given by
/// `weights_of` (dense attention: attention_weights), for the last `rows` queries
/// only; the weights of the other queries are left at zero.
/// @param X the layer's input, n×d_model
inline AttentionLayerForward<float> attention_layer_forward_with(
    const AttentionLayer<float>& layer, const xt::xtensor<float, 2>& X,
    const WeightsOf& weights_of, std::size_t rows)
{
    const std::size_t n = X.shape(0), d_model = X.shape(1), first = n - rows;
    const std::size_t d_k = d_model / layer.heads;
    AttentionLayerForward<float> f;
    f.Q = detail::matmul(X, layer.W_q);  // n×d_model
    f.K = detail::matmul(X, layer.W_k);  // n×d_model
    f.V = detail::matmul(X, layer.W_v);  // n×d_model
    f.concat = xt::zeros<float>({n, d_model});
    for (std::size_t head = 0; head < layer.heads; ++head) {
        const xt::xtensor<float, 2> Q_h = head_columns(f.Q, head, d_k);  // n×d_k
        const xt::xtensor<float, 2> asking =
            xt::view(Q_h, xt::range(first, n), xt::all());                // rows×d_k
        xt::xtensor<float, 2> P = xt::zeros<float>({n, n});                // n×n
        xt::view(P, xt::range(first, n), xt::all()) =
            weights_of(asking, head_columns(f.K, head, d_k));
        f.weights.push_back(P);
        const xt::xtensor<float, 2> V_h = head_columns(f.V, head, d_k);  // n×d_v
        set_head_columns(f.concat, head, d_k, detail::matmul(P, V_h));
    }
    f.output = detail::matmul(f.concat, layer.W_o);  // n×d_model
    return f;
}

/// @brief Chapter 4's model_forward with every layer's attention given by
/// `weights_of`, computed for the last `rows` queries (all: rows = n).
inline TinyModelForward<float> model_forward_with(
    const TinyModel<float>& model, const std::vector<std::size_t>& tokens,
    const WeightsOf& weights_of, std::size_t rows)
{
    const std::size_t n = tokens.size(), d = model.shape.d_model;
    if (n != model.shape.n)
        throw std::invalid_argument("model_forward_with: the model reads n tokens");
    TinyModelForward<float> f;
    xt::xtensor<float, 2> X = xt::zeros<float>({n, d});  // n×d_model
    for (std::size_t i = 0; i < n; ++i)
        xt::row(X, i) = xt::row(model.token_embedding, tokens.at(i)) +
                        xt::row(model.position_embedding, i);
    f.residual.push_back(X);
    for (const AttentionLayer<float>& layer : model.layers) {
        f.layers.push_back(attention_layer_forward_with(layer, f.residual.back(),
                                                        weights_of, rows));
        f.residual.push_back(f.residual.back() + f.layers.back().output);
    }
    f.logits = detail::matmul(f.residual.back(), model.W_out);  // n×vocab
    return f;
}

// ⟨Make associative-recall examples⟩ 14-efficiency-zoo.md:1048
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

// ⟨Score the answers to the questions⟩ 14-efficiency-zoo.md:1103
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

// ⟨Train the model on a recall task⟩ 14-efficiency-zoo.md:1127
/// @brief Train `model` with Adam on the recall task, its attention given by
/// `weights_of`; every example comes from `rng`.
inline void train_recall(TinyModel<float>& model, bool far, const WeightsOf& weights_of,
                         const TrainingConfig& config, std::mt19937_64& rng)
{
    const BlasThreads one_thread(1);
    Adam<float> adam(model, config.learning_rate);
    const float weight = 1.0f / float(config.batch * RecallVocabulary::keys);
    for (std::size_t step = 0; step < config.steps; ++step) {
        TinyModel<float> grad = zero_model<float>(model.shape);
        for (std::size_t b = 0; b < config.batch; ++b) {
            const RecallExample example = recall_example(model.shape.n, far, rng);
            const TinyModelForward<float> f = model_forward_with(
                model, example.tokens, weights_of, RecallVocabulary::keys);
            SequenceLoss<float> scored = score_answers(f.logits, example.answers);
            scored.d_logits *= weight;
            model_backward(model, example.tokens, f, scored.d_logits, grad);
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
    std::size_t right = 0;
    for (std::size_t s = 0; s < count; ++s) {
        const RecallExample example = recall_example(model.shape.n, far, rng);
        const TinyModelForward<float> f = model_forward_with(
            model, example.tokens, weights_of, RecallVocabulary::keys);
        right += score_answers(f.logits, example.answers).correct;
    }
    return double(right) / double(count * RecallVocabulary::keys);
}

// ⟨Create the model for a recall task⟩ 14-efficiency-zoo.md:1177
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
