// Generated from chapters/15-positions.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 15: a causal attention-only model with a choice of position scheme,
/// its backward pass, two tasks, training and accuracy against length.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/masked_attention.hpp"
#include "attn/multi_head_attention.hpp"
#include "attn/positions.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"
#include "attn/tiny_model.hpp"

namespace attn {

// ⟨Name the position schemes⟩ 15-positions.md:810
/// @brief How a PositionModel knows where its tokens are.
enum class PositionScheme {
    none,        ///< nothing: the causal mask is the only source of order
    sinusoidal,  ///< fixed sinusoids added to the token embeddings
    learned,     ///< a learned row per position added to the token embeddings
    t5_bias,     ///< a learned scalar per head and distance bucket added to the scores
    alibi,       ///< −slope·distance added to the scores, fixed slopes per head
    rope,        ///< queries and keys rotated by their positions (split halves)
};

/// @brief The name of a scheme, for labels.
inline std::string scheme_name(PositionScheme scheme)
{
    switch (scheme) {
    case PositionScheme::none: return "none";
    case PositionScheme::sinusoidal: return "sinusoidal";
    case PositionScheme::learned: return "learned";
    case PositionScheme::t5_bias: return "T5 bias";
    case PositionScheme::alibi: return "ALiBi";
    case PositionScheme::rope: return "RoPE";
    }
    return "?";
}

// ⟨Describe the position model⟩ 15-positions.md:836
/// @brief The sizes of a PositionModel and its position scheme.
struct PositionModelShape {
    PositionScheme scheme = PositionScheme::none;
    std::size_t vocab = 16;    ///< token ids 0 … vocab−1
    std::size_t d_model = 32;  ///< embedding width
    std::size_t heads = 4;     ///< h per layer; d_k = d_v = d_model/h
    std::size_t layers = 1;    ///< causal attention layers
    std::size_t max_n = 256;   ///< rows of the learned table: the longest input
    std::size_t buckets = 16;  ///< T5 buckets (causal: keys before the query)
    std::size_t max_distance = 16;  ///< T5: from here on, one shared bucket
};

/// @brief A causal attention-only model whose position scheme is a parameter.
template <class T>
struct PositionModel {
    PositionModelShape shape;
    xt::xtensor<T, 2> token_embedding;             ///< vocab×d_model
    xt::xtensor<T, 2> position_embedding;          ///< max_n×d_model (learned)
    std::vector<AttentionLayer<T>> layers;         ///< chapter 4's layers
    std::vector<xt::xtensor<T, 2>> relative_bias;  ///< per layer: heads×buckets (T5)
    xt::xtensor<T, 2> W_out;                       ///< d_model×vocab
};

// ⟨Create the position model⟩ 15-positions.md:869
/// @brief A model of the given shape with every parameter zero (for gradients).
template <class T>
PositionModel<T> zero_position_model(const PositionModelShape& shape)
{
    check_head_count(shape.d_model, shape.heads);
    const std::size_t d = shape.d_model;
    const bool learned = shape.scheme == PositionScheme::learned;
    const bool t5 = shape.scheme == PositionScheme::t5_bias;
    PositionModel<T> model{shape, xt::zeros<T>({shape.vocab, d}),
                           xt::zeros<T>({learned ? shape.max_n : 0, d}), {}, {},
                           xt::zeros<T>({d, shape.vocab})};
    for (std::size_t l = 0; l < shape.layers; ++l) {
        model.layers.push_back({shape.heads, xt::zeros<T>({d, d}), xt::zeros<T>({d, d}),
                                xt::zeros<T>({d, d}), xt::zeros<T>({d, d})});
        model.relative_bias.push_back(
            xt::zeros<T>({t5 ? shape.heads : 0, t5 ? shape.buckets : 0}));
    }
    return model;
}

/// @brief A model with N(0, 1) embeddings, N(0, 1/d_model) weights and zero T5 biases.
template <class T>
PositionModel<T> init_position_model(const PositionModelShape& shape,
                                     std::mt19937_64& rng)
{
    PositionModel<T> model = zero_position_model<T>(shape);
    const std::size_t d = shape.d_model;
    model.token_embedding = random_normal<T>(shape.vocab, d, 1.0, rng);
    if (shape.scheme == PositionScheme::learned)
        model.position_embedding = random_normal<T>(shape.max_n, d, 1.0, rng);
    init_layers_and_output<T>(model, rng);  // chapter 4's
    return model;
}

/// @brief Every parameter matrix of `model`, in a fixed order (pointers into it).
template <class Model>
auto position_model_parameters(Model& model)
{
    // const if Model is
    using Matrix = std::remove_reference_t<decltype((model.W_out))>;
    std::vector<Matrix*> list = {&model.token_embedding, &model.position_embedding};
    for (std::size_t l = 0; l < model.layers.size(); ++l)
        for (Matrix* W :
             {&model.layers[l].W_q, &model.layers[l].W_k, &model.layers[l].W_v,
              &model.layers[l].W_o, &model.relative_bias[l]})
            list.push_back(W);
    list.push_back(&model.W_out);
    return list;
}

// ⟨Embed the tokens and their positions⟩ 15-positions.md:926
/// @brief The first layer's input: token embeddings, plus positions if absolute.
/// @param tokens n token ids
/// @return X_0, n×d_model
template <class T>
xt::xtensor<T, 2> embed_positions(const PositionModel<T>& model,
                                  const std::vector<std::size_t>& tokens)
{
    const std::size_t n = tokens.size(), d = model.shape.d_model;
    if (model.shape.scheme == PositionScheme::learned && n > model.shape.max_n)
        throw std::invalid_argument("embed_positions: " + std::to_string(n) +
                                    " tokens, but the learned table has " +
                                    std::to_string(model.shape.max_n) + " rows");
    xt::xtensor<T, 2> X = xt::zeros<T>({n, d});  // n×d_model
    for (std::size_t i = 0; i < n; ++i) {
        if (tokens[i] >= model.shape.vocab)
            throw std::invalid_argument("embed_positions: token id out of range");
        xt::row(X, i) = xt::row(model.token_embedding, tokens[i]);
        if (model.shape.scheme == PositionScheme::learned)
            xt::row(X, i) += xt::row(model.position_embedding, i);
    }
    if (model.shape.scheme == PositionScheme::sinusoidal)
        X += sinusoidal_positions<T>(n, d);
    return X;
}

// ⟨Find the bias of a head⟩ 15-positions.md:958
/// @brief The bias head h of layer l adds to its scores over n positions (or zeros).
/// @return n×n
template <class T>
xt::xtensor<T, 2> score_bias(const PositionModel<T>& model, std::size_t l,
                             std::size_t h, std::size_t n)
{
    const PositionModelShape& s = model.shape;
    if (s.scheme == PositionScheme::alibi)
        return alibi_bias<T>(n, alibi_slopes(s.heads)[h]);
    if (s.scheme == PositionScheme::t5_bias) {
        const T* row = model.relative_bias[l].data() + h * s.buckets;  // head h's table
        return t5_bias<T>(n, std::vector<T>(row, row + s.buckets), false,
                          s.max_distance);
    }
    return xt::zeros<T>({n, n});
}

// ⟨Run a position layer forward⟩ 15-positions.md:977
/// @brief Causal multi-head self-attention with the model's position scheme.
/// @param X the layer's input, n×d_model
/// @return the output with what the backward pass needs (Q and K as rotated, if RoPE)
template <class T>
AttentionLayerForward<T> position_layer_forward(const PositionModel<T>& model,
                                                std::size_t l,
                                                const xt::xtensor<T, 2>& X)
{
    using detail::matmul;
    const AttentionLayer<T>& layer = model.layers[l];
    const std::size_t n = X.shape(0), h = layer.heads, d_k = model.shape.d_model / h;
    const Mask causal = causal_mask(n);
    AttentionLayerForward<T> f;
    f.Q = matmul(X, layer.W_q);  // n×d_model
    f.K = matmul(X, layer.W_k);  // n×d_model
    f.V = matmul(X, layer.W_v);  // n×d_model
    f.concat = xt::zeros<T>({n, model.shape.d_model});
    for (std::size_t head = 0; head < h; ++head) {
        xt::xtensor<T, 2> q = head_columns(f.Q, head, d_k);  // n×d_k
        xt::xtensor<T, 2> k = head_columns(f.K, head, d_k);  // n×d_k
        if (model.shape.scheme == PositionScheme::rope) {
            q = rope(q, 0);
            k = rope(k, 0);
            set_head_columns(f.Q, head, d_k, q);
            set_head_columns(f.K, head, d_k, k);
        }
        f.weights.push_back(biased_attention_weights(q, k,
                                                     score_bias(model, l, head, n),
                                                     causal));  // n×n
        set_head_columns(f.concat, head, d_k,
                         matmul(f.weights.back(), head_columns(f.V, head, d_k)));
    }
    f.output = matmul(f.concat, layer.W_o);  // n×d_model
    return f;
}

// ⟨Run the position model forward⟩ 15-positions.md:1019
/// @brief Everything the model computed on one sequence (chapter 4's record).
template <class T>
using PositionModelForward = TinyModelForward<T>;

/// @brief Run the model on one sequence of token ids (any length; learned: ≤ max_n).
template <class T>
PositionModelForward<T> position_model_forward(const PositionModel<T>& model,
                                               const std::vector<std::size_t>& tokens)
{
    auto layer_forward = [&](std::size_t l, const xt::xtensor<T, 2>& X) {
        return position_layer_forward(model, l, X);
    };
    return residual_forward(embed_positions(model, tokens), model.layers.size(),
                            model.W_out, layer_forward);
}

// ⟨Backpropagate through a position layer⟩ 15-positions.md:1081
/// @brief Backward pass of position_layer_forward: add the gradients of layer l's
/// weights (and T5 biases) to `grad`; return the gradient of its input X, n×d_model.
/// @param dY the gradient of the loss with respect to the layer's output, n×d_model
template <class T>
xt::xtensor<T, 2> position_layer_backward(const PositionModel<T>& model, std::size_t l,
                                          const xt::xtensor<T, 2>& X,
                                          const AttentionLayerForward<T>& f,
                                          const xt::xtensor<T, 2>& dY,
                                          PositionModel<T>& grad)
{
    using detail::matmul, detail::transposed;
    const AttentionLayer<T>& layer = model.layers[l];
    const std::size_t n = X.shape(0), h = layer.heads, d_k = model.shape.d_model / h;
    grad.layers[l].W_o += matmul(transposed(f.concat), dY);
    const xt::xtensor<T, 2> d_concat = matmul(dY, transposed(layer.W_o));  // n×d_model
    xt::xtensor<T, 2> dQ = xt::zeros<T>({n, model.shape.d_model}), dK = dQ, dV = dQ;
    for (std::size_t head = 0; head < h; ++head) {
        const xt::xtensor<T, 2> v = head_columns(f.V, head, d_k),
                                d_o = head_columns(d_concat, head, d_k);  // n×d_v each
        AttentionGradients<T> g = attention_backward<T>(head_columns(f.Q, head, d_k),
                                                        head_columns(f.K, head, d_k), v,
                                                        f.weights[head], d_o);
        if (model.shape.scheme == PositionScheme::t5_bias)
            // ⟨Collect the gradient of the T5 biases⟩ 15-positions.md:1128
            {
                const xt::xtensor<T, 2> dP = matmul(d_o, transposed(v));                  // n×n
                const xt::xtensor<T, 2> dS = softmax_rows_backward(f.weights[head], dP);  // n×n
                T* table = grad.relative_bias[l].data() + head * model.shape.buckets;
                for (std::size_t i = 0; i < n; ++i)
                    for (std::size_t j = 0; j <= i; ++j)
                        table[t5_bucket(std::int64_t(j) - std::int64_t(i), false,
                                        model.shape.buckets, model.shape.max_distance)] += dS(i, j);
            }
        if (model.shape.scheme == PositionScheme::rope) {
            g.dQ = rope_backward(g.dQ, 0);  // through q' = R q: dq = Rᵀ dq'
            g.dK = rope_backward(g.dK, 0);
        }
        set_head_columns(dQ, head, d_k, g.dQ);
        set_head_columns(dK, head, d_k, g.dK);
        set_head_columns(dV, head, d_k, g.dV);
    }
    const xt::xtensor<T, 2> X_t = transposed(X);  // d_model×n
    grad.layers[l].W_q += matmul(X_t, dQ);
    grad.layers[l].W_k += matmul(X_t, dK);
    grad.layers[l].W_v += matmul(X_t, dV);
    xt::xtensor<T, 2> dX = matmul(dQ, transposed(layer.W_q));
    dX += matmul(dK, transposed(layer.W_k));
    dX += matmul(dV, transposed(layer.W_v));
    return dX;
}

// ⟨Run the position model backward⟩ 15-positions.md:1140
/// @brief Add the gradient of the loss of one sequence to `grad` (a model-shaped sum).
/// @param d_logits the gradient of the loss with respect to the logits, n×vocab
template <class T>
void position_model_backward(const PositionModel<T>& model,
                             const std::vector<std::size_t>& tokens,
                             const PositionModelForward<T>& f,
                             const xt::xtensor<T, 2>& d_logits, PositionModel<T>& grad)
{
    using detail::matmul, detail::transposed;
    grad.W_out += matmul(transposed(f.residual.back()), d_logits);
    xt::xtensor<T, 2> dX = matmul(d_logits, transposed(model.W_out));  // n×d_model
    for (std::size_t l = model.layers.size(); l-- > 0;)
        dX += position_layer_backward(model, l, f.residual[l], f.layers[l], dX, grad);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        xt::row(grad.token_embedding, tokens[i]) += xt::row(dX, i);
        if (model.shape.scheme == PositionScheme::learned)
            xt::row(grad.position_embedding, i) += xt::row(dX, i);
    }
}

// ⟨Make the task examples⟩ 15-positions.md:1179
/// @brief "No target here": positions the loss and the accuracy skip.
constexpr std::size_t no_target = std::numeric_limits<std::size_t>::max();

/// @brief One example of a task: n tokens, n targets (or no_target), and where each
/// target comes from: the position of the token it repeats (or no_target).
struct TaskExample {
    std::vector<std::size_t> tokens, targets, sources;
};

/// @brief A task: a name and a way to draw an example of any length.
struct PositionTask {
    std::string name;
    std::function<TaskExample(std::size_t n, std::mt19937_64& rng)> draw;
};

/// @brief Uniform tokens; the target at i is the token at i − offset.
inline TaskExample copy_back_example(std::size_t n, std::size_t vocab,
                                     std::size_t offset, std::mt19937_64& rng)
{
    if (vocab == 0) throw std::invalid_argument("copy_back_example: empty vocabulary");
    std::uniform_int_distribution<std::size_t> token(0, vocab - 1);
    TaskExample example{std::vector<std::size_t>(n),
                        std::vector<std::size_t>(n, no_target),
                        std::vector<std::size_t>(n, no_target)};
    for (std::size_t i = 0; i < n; ++i) {
        example.tokens[i] = token(rng);
        if (i >= offset) {
            example.sources[i] = i - offset;
            example.targets[i] = example.tokens[i - offset];
        }
    }
    return example;
}

/// @brief Ids below `markers` are markers, drawn with probability `rate`; the target at
/// i is the last marker at or before i.
inline TaskExample last_marker_example(std::size_t n, std::size_t vocab,
                                       std::size_t markers, double rate,
                                       std::mt19937_64& rng)
{
    if (markers == 0 || markers >= vocab || !(rate >= 0 && rate <= 1))
        throw std::invalid_argument("last_marker_example: need 0 < markers < vocab and "
                                    "a rate in [0, 1]");
    std::bernoulli_distribution is_marker(rate);
    std::uniform_int_distribution<std::size_t> marker(0, markers - 1),
        other(markers, vocab - 1);
    TaskExample example{std::vector<std::size_t>(n),
                        std::vector<std::size_t>(n, no_target),
                        std::vector<std::size_t>(n, no_target)};
    std::size_t last = no_target;  // the position of the last marker
    for (std::size_t i = 0; i < n; ++i) {
        example.tokens[i] = is_marker(rng) ? marker(rng) : other(rng);
        if (example.tokens[i] < markers) last = i;
        example.sources[i] = last;
        example.targets[i] = last == no_target ? no_target : example.tokens[last];
    }
    return example;
}

// ⟨Score the predictions where there is a target⟩ 15-positions.md:1242
/// @brief Cross-entropy over the positions that have a target, with its gradient.
template <class T>
struct TaskLoss {
    double loss = 0;             ///< Σ −log p_i(t_i) over counted positions
    std::size_t counted = 0;     ///< positions with a target
    std::size_t correct = 0;     ///< counted positions whose top logit is the target
    xt::xtensor<T, 2> d_logits;  ///< n×vocab: softmax − onehot; 0 on other rows
};

template <class T>
TaskLoss<T> task_loss(const xt::xtensor<T, 2>& logits,
                      const std::vector<std::size_t>& targets)
{
    const std::size_t n = logits.shape(0), vocab = logits.shape(1);
    if (targets.size() != n)
        throw std::invalid_argument("task_loss: " + std::to_string(targets.size()) +
                                    " targets for logits of " +
                                    detail::shape_of(logits));
    TaskLoss<T> result{0, 0, 0, softmax_rows(logits)};
    for (std::size_t i = 0; i < n; ++i) {
        T* p = result.d_logits.data() + i * vocab;
        if (targets[i] == no_target) {
            std::fill(p, p + vocab, T(0));
            continue;
        }
        if (targets[i] >= vocab) throw std::invalid_argument("task_loss: target id");
        const T* z = logits.data() + i * vocab;
        const std::size_t best = std::size_t(std::max_element(z, z + vocab) - z);
        ++result.counted;
        result.correct += (best == targets[i]);
        result.loss -= std::log(std::max(double(p[targets[i]]), 1e-300));
        p[targets[i]] -= T(1);
    }
    return result;
}

// ⟨Train a position model⟩ 15-positions.md:1287
/// @brief How to train: the length, steps, batch size and Adam's learning rate.
struct PositionTraining {
    std::size_t n = 16, steps = 800, batch = 16;
    double learning_rate = 1e-2;
};

/// @brief Train `model` on `task` with Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e−8).
/// @return the mean loss per counted position over the last tenth of the steps
template <class T>
double train_position_model(PositionModel<T>& model, const PositionTask& task,
                            const PositionTraining& config, std::mt19937_64& rng)
{
    const double beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8;
    PositionModel<T> m = zero_position_model<T>(model.shape), v = m;
    double late_loss = 0, late_count = 0;
    for (std::size_t step = 1; step <= config.steps; ++step) {
        PositionModel<T> grad = zero_position_model<T>(model.shape);
        std::vector<TaskExample> batch;
        std::size_t counted = 0;
        for (std::size_t b = 0; b < config.batch; ++b)
            batch.push_back(task.draw(config.n, rng));
        for (const TaskExample& example : batch) {
            const PositionModelForward<T> f =
                position_model_forward(model, example.tokens);
            TaskLoss<T> scored = task_loss(f.logits, example.targets);
            position_model_backward(model, example.tokens, f, scored.d_logits, grad);
            counted += scored.counted;
            if (10 * step > 9 * config.steps) late_loss += scored.loss;
        }
        if (10 * step > 9 * config.steps) late_count += double(counted);
        const double mean = 1.0 / double(std::max<std::size_t>(counted, 1));
        const double c1 = 1 - std::pow(beta1, double(step)),
                     c2 = 1 - std::pow(beta2, double(step));
        auto theta = position_model_parameters(model);
        auto g = position_model_parameters(grad), m1 = position_model_parameters(m),
             m2 = position_model_parameters(v);
        for (std::size_t p = 0; p < theta.size(); ++p)
            for (std::size_t k = 0; k < theta[p]->size(); ++k) {
                const double g_k = double(g[p]->data()[k]) * mean;
                T& m_k = m1[p]->data()[k];
                T& v_k = m2[p]->data()[k];
                m_k = T(beta1 * double(m_k) + (1 - beta1) * g_k);
                v_k = T(beta2 * double(v_k) + (1 - beta2) * g_k * g_k);
                theta[p]->data()[k] -= T(config.learning_rate * (double(m_k) / c1) /
                                         (std::sqrt(double(v_k) / c2) + epsilon));
            }
    }
    return late_count > 0 ? late_loss / late_count : 0.0;
}

// ⟨Measure the accuracy at a length⟩ 15-positions.md:1342
/// @brief Fraction of the positions with a target that the model gets right, over
/// `count` fresh sequences of n tokens.
template <class T>
double position_accuracy(const PositionModel<T>& model, const PositionTask& task,
                         std::size_t n, std::size_t count, std::mt19937_64& rng)
{
    std::size_t counted = 0, correct = 0;
    for (std::size_t s = 0; s < count; ++s) {
        const TaskExample example = task.draw(n, rng);
        const TaskLoss<T> scored = task_loss(
            position_model_forward(model, example.tokens).logits, example.targets);
        counted += scored.counted;
        correct += scored.correct;
    }
    return counted ? double(correct) / double(counted) : 0.0;
}

// ⟨Measure the attention on the source⟩ 15-positions.md:1369
/// @brief How sharply a model attends to each target's source.
struct SourceAttention {
    double source = 0;  ///< weight on the source key, in the head that gives it most
    double rival = 0;   ///< the largest weight on any other key, in that same head
};

/// @brief SourceAttention averaged over the positions with a target in `count` fresh
/// sequences of n tokens (heads of every layer compete).
template <class T>
SourceAttention source_attention(const PositionModel<T>& model,
                                 const PositionTask& task, std::size_t n,
                                 std::size_t count, std::mt19937_64& rng)
{
    SourceAttention mean;
    double counted = 0;
    for (std::size_t s = 0; s < count; ++s) {
        const TaskExample example = task.draw(n, rng);
        const PositionModelForward<T> f = position_model_forward(model, example.tokens);
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t source = example.sources[i];
            if (source == no_target) continue;
            SourceAttention best{-1, 0};
            for (const AttentionLayerForward<T>& layer : f.layers)
                for (const xt::xtensor<T, 2>& P : layer.weights) {  // n×n
                    if (double(P(i, source)) <= best.source) continue;
                    best = {double(P(i, source)), 0};
                    for (std::size_t j = 0; j <= i; ++j)  // the causal keys
                        if (j != source)
                            best.rival = std::max(best.rival, double(P(i, j)));
                }
            mean.source += best.source;
            mean.rival += best.rival;
            ++counted;
        }
    }
    if (counted > 0) mean.source /= counted, mean.rival /= counted;
    return mean;
}

}  // namespace attn
