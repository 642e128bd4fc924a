// Generated from chapters/04-learning-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 4: a tiny attention-only model, its
/// backward pass, Adam, the reversal task, saving.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"

namespace attn {

// ⟨Describe the tiny model⟩ 04-learning-attention.md:558
/// @brief The sizes of the tiny attention-only model.
struct TinyModelShape {
    std::size_t vocab = 26;    ///< number of token ids (the letters a–z)
    std::size_t n = 10;        ///< sequence length
    std::size_t d_model = 32;  ///< embedding width
    std::size_t heads = 2;     ///< h per layer; d_k = d_v = d_model/h
    std::size_t layers = 2;    ///< attention layers
};

/// @brief Token and position embeddings, attention layers
/// with residual connections, an output projection.
template <class T>
struct TinyModel {
    TinyModelShape shape;
    xt::xtensor<T, 2> token_embedding;       ///< vocab×d_model
    xt::xtensor<T, 2> position_embedding;    ///< n×d_model
    std::vector<AttentionLayer<T>> layers;   ///< shape.layers layers
    xt::xtensor<T, 2> W_out;                 ///< d_model×vocab
};

// ⟨Create the model⟩ 04-learning-attention.md:585
/// @brief A model of the given shape with every
/// parameter zero (a container for gradients).
template <class T>
TinyModel<T> zero_model(const TinyModelShape& shape)
{
    if (shape.heads == 0 || shape.d_model % shape.heads != 0)
        throw std::invalid_argument(
            "TinyModel: the number of heads must divide d_model");
    const std::size_t d = shape.d_model;
    TinyModel<T> model{shape,
                       xt::zeros<T>({shape.vocab, d}),
                       xt::zeros<T>({shape.n, d}),
                       {},
                       xt::zeros<T>({d, shape.vocab})};
    for (std::size_t l = 0; l < shape.layers; ++l)
        model.layers.push_back({shape.heads, xt::zeros<T>({d, d}), xt::zeros<T>({d, d}),
                                xt::zeros<T>({d, d}), xt::zeros<T>({d, d})});
    return model;
}

/// @brief Draw every layer's W_q, W_k, W_v, W_o, then W_out, from N(0, 1/d_model), for
/// any model with `layers` and `W_out` (d_model×vocab).
template <class T, class Model>
void init_layers_and_output(Model& model, std::mt19937_64& rng)
{
    const std::size_t d = model.W_out.shape(0), vocab = model.W_out.shape(1);
    const double init = 1.0 / std::sqrt(double(d));
    for (AttentionLayer<T>& layer : model.layers)
        for (xt::xtensor<T, 2>* W : {&layer.W_q, &layer.W_k, &layer.W_v, &layer.W_o})
            *W = random_normal<T>(d, d, init, rng);
    model.W_out = random_normal<T>(d, vocab, init, rng);
}

/// @brief A model with N(0, 1) embeddings and N(0, 1/d_model) weight matrices.
template <class T>
TinyModel<T> init_tiny_model(const TinyModelShape& shape, std::mt19937_64& rng)
{
    TinyModel<T> model = zero_model<T>(shape);
    model.token_embedding = random_normal<T>(shape.vocab, shape.d_model, 1.0, rng);
    model.position_embedding = random_normal<T>(shape.n, shape.d_model, 1.0, rng);
    init_layers_and_output<T>(model, rng);
    return model;
}

// ⟨List the parameters by name⟩ 04-learning-attention.md:635
/// @brief Every parameter matrix of `model` with its
/// name, in a fixed order (pointers into the model).
template <class Model>
auto parameters(Model& model)
{
    // const if Model is
    using Matrix = std::remove_reference_t<decltype((model.W_out))>;
    std::vector<std::pair<std::string, Matrix*>> list = {
        {"token_embedding", &model.token_embedding},
        {"position_embedding", &model.position_embedding}};
    for (std::size_t l = 0; l < model.layers.size(); ++l) {
        const std::string prefix = "layer" + std::to_string(l) + ".";
        list.emplace_back(prefix + "W_q", &model.layers[l].W_q);
        list.emplace_back(prefix + "W_k", &model.layers[l].W_k);
        list.emplace_back(prefix + "W_v", &model.layers[l].W_v);
        list.emplace_back(prefix + "W_o", &model.layers[l].W_o);
    }
    list.emplace_back("W_out", &model.W_out);
    return list;
}

// ⟨Record the model's forward pass⟩ 04-learning-attention.md:662
/// @brief Everything the model computed on one sequence.
template <class T>
struct TinyModelForward {
    std::vector<xt::xtensor<T, 2>> residual;        ///< X_0 … X_L, each n×d_model
    std::vector<AttentionLayerForward<T>> layers;   ///< each layer's tape
    xt::xtensor<T, 2> logits;                       ///< n×vocab
};

// ⟨Run the layers on the residual stream⟩ 04-learning-attention.md:704
/// @brief Run `layers` layers on the residual stream from X_0, then project
/// the last residual to logits: X_{l+1} = X_l + layer_forward(l, X_l).output.
/// @param X_0 the embedded tokens, n×d_model; @param W_out d_model×vocab
/// @param layer_forward (l, X_l) → layer l's AttentionLayerForward on X_l
/// @return every residual, every layer's tape and the logits (n×vocab)
template <class T, class LayerForward>
TinyModelForward<T> residual_forward(xt::xtensor<T, 2> X_0, std::size_t layers,
                                     const xt::xtensor<T, 2>& W_out,
                                     LayerForward&& layer_forward)
{
    TinyModelForward<T> f;
    f.residual.push_back(std::move(X_0));
    for (std::size_t l = 0; l < layers; ++l) {
        f.layers.push_back(layer_forward(l, f.residual.back()));
        // X_{l+1} = X_l + MHA_l(X_l)
        f.residual.push_back(f.residual.back() + f.layers.back().output);
    }
    f.logits = detail::matmul(f.residual.back(), W_out);  // n×vocab
    return f;
}

// ⟨Run the model forward⟩ 04-learning-attention.md:672
/// @brief Run the model on one sequence of n token ids.
/// @param attention what each head computes (softmax attention unless given)
/// @return the logits (n×vocab) with every intermediate value
template <class T, class Attention = SoftmaxAttention>
TinyModelForward<T> model_forward(const TinyModel<T>& model,
                                  const std::vector<std::size_t>& tokens,
                                  const Attention& attention = {})
{
    const std::size_t n = model.shape.n, d = model.shape.d_model;
    if (tokens.size() != n)
        throw std::invalid_argument(
            "model_forward: the model reads sequences of exactly n tokens");
    xt::xtensor<T, 2> X = xt::zeros<T>({n, d});  // n×d_model
    for (std::size_t i = 0; i < n; ++i) {
        if (tokens[i] >= model.shape.vocab)
            throw std::invalid_argument("model_forward: token id out of range");
        xt::row(X, i) = xt::row(model.token_embedding, tokens[i]) +
                        xt::row(model.position_embedding, i);
    }
    return residual_forward(X, model.layers.size(), model.W_out,
                            [&](std::size_t l, const xt::xtensor<T, 2>& X_l) {
                                return attention_layer_forward(model.layers[l], X_l,
                                                               attention);
                            });
}

// ⟨Score the predictions with cross-entropy⟩ 04-learning-attention.md:734
/// @brief Cross-entropy of one sequence: its loss,
/// how many positions are right, and d loss/d logits.
template <class T>
struct SequenceLoss {
    double loss = 0;              ///< Σ_i −log p_i(t_i), summed over positions
    std::size_t correct = 0;      ///< positions whose largest logit is the target
    xt::xtensor<T, 2> d_logits;   ///< softmax(logits) − onehot(targets), n×vocab
};

/// @brief Cross-entropy of `logits` (n×vocab)
/// against `targets` (n ids), with its gradient.
template <class T>
SequenceLoss<T> cross_entropy(const xt::xtensor<T, 2>& logits,
                              const std::vector<std::size_t>& targets)
{
    const std::size_t n = logits.shape(0), vocab = logits.shape(1);
    if (targets.size() != n)
        throw std::invalid_argument("cross_entropy: one target per row");
    // d_logits starts as the probabilities
    SequenceLoss<T> result{0, 0, softmax_rows(logits)};
    for (std::size_t i = 0; i < n; ++i) {
        const T* z = logits.data() + i * vocab;
        const std::size_t best = std::size_t(std::max_element(z, z + vocab) - z);
        double total = 0;
        for (std::size_t c = 0; c < vocab; ++c)
            total += std::exp(double(z[c]) - double(z[best]));
        // logsumexp − z_t
        result.loss += double(z[best]) + std::log(total) - double(z[targets[i]]);
        result.correct += (best == targets[i]);
        result.d_logits(i, targets[i]) -= T(1);
    }
    return result;
}

// ⟨Run the model backward⟩ 04-learning-attention.md:779
/// @brief Add the gradient of the loss of one
/// sequence to `grad` (a model-shaped accumulator).
/// @param f        what model_forward computed on `tokens`
/// @param d_logits the gradient of the loss with respect to the logits, n×vocab
/// @param attention what each head computed, as in the forward pass
template <class T, class Attention = SoftmaxAttention>
void model_backward(const TinyModel<T>& model, const std::vector<std::size_t>& tokens,
                    const TinyModelForward<T>& f, const xt::xtensor<T, 2>& d_logits,
                    TinyModel<T>& grad, const Attention& attention = {})
{
    using detail::matmul, detail::transposed;
    grad.W_out += matmul(transposed(f.residual.back()), d_logits);  // d_model×vocab
    // n×d_model, gradient of X_L
    xt::xtensor<T, 2> dX = matmul(d_logits, transposed(model.W_out));
    for (std::size_t l = model.layers.size(); l-- > 0;) {
        const AttentionLayerGradients<T> g = attention_layer_backward(
            model.layers[l], f.residual[l], f.layers[l], dX, attention);
        grad.layers[l].W_q += g.dW_q;
        grad.layers[l].W_k += g.dW_k;
        grad.layers[l].W_v += g.dW_v;
        grad.layers[l].W_o += g.dW_o;
        dX += g.dX;  // the residual path plus the path through the layer
    }
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        xt::row(grad.token_embedding, tokens[i]) += xt::row(dX, i);
        xt::row(grad.position_embedding, i) += xt::row(dX, i);
    }
}

// ⟨Update the parameters with Adam⟩ 04-learning-attention.md:988
/// @brief The Adam optimiser (Kingma & Ba 2015,
/// Algorithm 1) over every parameter of a TinyModel.
template <class T>
class Adam {
public:
    /// @param model sets the shapes of the moment estimates; @param learning_rate α
    Adam(const TinyModel<T>& model, double learning_rate, double beta1 = 0.9,
         double beta2 = 0.999, double epsilon = 1e-8)
        : m_(zero_model<T>(model.shape)), v_(zero_model<T>(model.shape)),
          alpha_(learning_rate), beta1_(beta1), beta2_(beta2), epsilon_(epsilon)
    {
    }

    /// @brief One step: move every parameter of `model` against its gradient in `grad`.
    void step(TinyModel<T>& model, const TinyModel<T>& grad)
    {
        ++t_;
        const double correction1 = 1 - std::pow(beta1_, double(t_)),
                     correction2 = 1 - std::pow(beta2_, double(t_));
        auto theta = parameters(model);
        const auto g = parameters(grad);
        auto m = parameters(m_), v = parameters(v_);
        for (std::size_t p = 0; p < theta.size(); ++p)
            for (std::size_t k = 0; k < theta[p].second->size(); ++k) {
                const double g_k = double(g[p].second->data()[k]);
                T& m_k = m[p].second->data()[k];
                T& v_k = v[p].second->data()[k];
                m_k = T(beta1_ * double(m_k) + (1 - beta1_) * g_k);
                v_k = T(beta2_ * double(v_k) + (1 - beta2_) * g_k * g_k);
                const double m_hat = double(m_k) / correction1,
                             v_hat = double(v_k) / correction2;
                theta[p].second->data()[k] -=
                    T(alpha_ * m_hat / (std::sqrt(v_hat) + epsilon_));
            }
    }

private:
    TinyModel<T> m_, v_;  // first and second moment estimates
    double alpha_, beta1_, beta2_, epsilon_;
    std::size_t t_ = 0;   // steps taken
};

// ⟨Make reversal examples⟩ 04-learning-attention.md:907
/// @brief One example of the reversal task:
/// tokens and the targets (the tokens reversed).
struct ReversalExample {
    std::vector<std::size_t> tokens;   ///< n ids, uniform in [0, vocab)
    std::vector<std::size_t> targets;  ///< targets[i] = tokens[n − 1 − i]
};

/// @brief Draw a random sequence of n tokens and its reversal.
inline ReversalExample reversal_example(std::size_t n, std::size_t vocab,
                                        std::mt19937_64& rng)
{
    std::uniform_int_distribution<std::size_t> letter(0, vocab - 1);
    ReversalExample example;
    for (std::size_t i = 0; i < n; ++i) example.tokens.push_back(letter(rng));
    example.targets.assign(example.tokens.rbegin(), example.tokens.rend());
    return example;
}

/// @brief The key each query must attend to in
/// the reversal task: query i → key n − 1 − i.
inline std::vector<std::size_t> reversal_ideal_keys(std::size_t n)
{
    std::vector<std::size_t> keys(n);
    for (std::size_t i = 0; i < n; ++i) keys[i] = n - 1 - i;
    return keys;
}

// ⟨Convert between letters and token ids⟩ 04-learning-attention.md:939
/// @brief The token ids of a lower-case word: 'a' → 0, …, 'z' → 25.
inline std::vector<std::size_t> letter_tokens(const std::string& word)
{
    std::vector<std::size_t> tokens;
    for (char c : word) {
        if (c < 'a' || c > 'z')
            throw std::invalid_argument("letter_tokens: '" + word +
                                        "' is not lower-case a–z");
        tokens.push_back(std::size_t(c - 'a'));
    }
    return tokens;
}

/// @brief The letter of each token id, as labels for figures.
inline std::vector<std::string> token_letters(const std::vector<std::size_t>& tokens)
{
    std::vector<std::string> letters;
    for (std::size_t t : tokens) letters.push_back(std::string(1, char('a' + t)));
    return letters;
}

// ⟨Train the model on the reversal task⟩ 04-learning-attention.md:1042
/// @brief How to train: steps, batch size, learning rate, how often to record the loss.
struct TrainingConfig {
    std::size_t steps = 600;
    std::size_t batch = 16;
    double learning_rate = 1e-2;
    std::size_t record_every = 10;
};

/// @brief The training loss and accuracy (on that step's batch) at one step.
struct TrainingPoint {
    std::size_t step;
    double loss;      ///< mean cross-entropy per position, in nats
    double accuracy;  ///< fraction of positions predicted right
};

/// @brief Train `model` on the reversal task with Adam;
/// `before_step(step, model)` runs before every step.
/// @return the loss and accuracy every config.record_every steps, and at the last step
template <class T, class BeforeStep>
std::vector<TrainingPoint> train_reversal(TinyModel<T>& model,
                                          const TrainingConfig& config,
                                          std::mt19937_64& rng,
                                          BeforeStep&& before_step)
{
    Adam<T> adam(model, config.learning_rate);
    const std::size_t n = model.shape.n;
    // the loss is the mean over the batch's positions
    const T weight = T(1) / T(config.batch * n);
    std::vector<TrainingPoint> curve;
    for (std::size_t step = 0; step < config.steps; ++step) {
        before_step(step, static_cast<const TinyModel<T>&>(model));
        TinyModel<T> grad = zero_model<T>(model.shape);
        double loss = 0;
        std::size_t correct = 0;
        for (std::size_t b = 0; b < config.batch; ++b) {
            const ReversalExample example = reversal_example(n, model.shape.vocab, rng);
            const TinyModelForward<T> f = model_forward(model, example.tokens);
            SequenceLoss<T> scored = cross_entropy(f.logits, example.targets);
            scored.d_logits *= weight;
            model_backward(model, example.tokens, f, scored.d_logits, grad);
            loss += scored.loss;
            correct += scored.correct;
        }
        if (step % config.record_every == 0 || step + 1 == config.steps)
            curve.push_back({step, loss / double(config.batch * n),
                             double(correct) / double(config.batch * n)});
        adam.step(model, grad);
    }
    return curve;
}

// ⟨Evaluate the model on held-out sequences⟩ 04-learning-attention.md:1099
/// @brief Loss and accuracy on sequences the model was not trained on.
struct Evaluation {
    double loss;               ///< mean cross-entropy per position
    double token_accuracy;     ///< fraction of positions right
    double sequence_accuracy;  ///< fraction of sequences entirely right
};

/// @brief Evaluate on `count` fresh reversal examples drawn from `rng`.
template <class T>
Evaluation evaluate_reversal(const TinyModel<T>& model, std::size_t count,
                             std::mt19937_64& rng)
{
    double loss = 0;
    std::size_t correct = 0, perfect = 0;
    for (std::size_t s = 0; s < count; ++s) {
        const ReversalExample example =
            reversal_example(model.shape.n, model.shape.vocab, rng);
        const SequenceLoss<T> scored =
            cross_entropy(model_forward(model, example.tokens).logits, example.targets);
        loss += scored.loss;
        correct += scored.correct;
        perfect += (scored.correct == model.shape.n);
    }
    const double positions = double(count * model.shape.n);
    return {loss / positions, double(correct) / positions,
            double(perfect) / double(count)};
}

// ⟨Check the gradients of the whole model⟩ 04-learning-attention.md:814
/// @brief Check model_backward against central differences of the
/// cross-entropy of one example, for every parameter matrix.
/// @param model a copy (it is perturbed)
/// @return the relative error of each parameter's gradient, by parameter name
inline GradientErrors check_model_gradients(TinyModel<double> model,
                                            const ReversalExample& example)
{
    auto loss = [&] {
        return cross_entropy(model_forward(model, example.tokens).logits,
                             example.targets)
            .loss;
    };
    TinyModel<double> grad = zero_model<double>(model.shape);
    const TinyModelForward<double> f = model_forward(model, example.tokens);
    model_backward(model, example.tokens, f,
                   cross_entropy(f.logits, example.targets).d_logits, grad);
    const auto analytic = parameters(grad);
    const auto perturbed = parameters(model);
    GradientErrors errors;
    for (std::size_t p = 0; p < analytic.size(); ++p)
        errors.emplace_back(
            analytic[p].first,
            relative_error(*analytic[p].second,
                           numerical_gradient(*perturbed[p].second, loss)));
    return errors;
}

// ⟨Read the attention weights out of the model⟩ 04-learning-attention.md:1134
/// @brief Attention weights of every head of every
/// layer on one sequence: [layer][head], each n×n.
template <class T>
std::vector<std::vector<xt::xtensor<double, 2>>> attention_maps(
    const TinyModel<T>& model, const std::vector<std::size_t>& tokens)
{
    const TinyModelForward<T> f = model_forward(model, tokens);
    std::vector<std::vector<xt::xtensor<double, 2>>> maps(f.layers.size());
    for (std::size_t l = 0; l < f.layers.size(); ++l)
        for (const xt::xtensor<T, 2>& P : f.layers[l].weights)
            maps[l].push_back(xt::xtensor<double, 2>(P));
    return maps;
}

// ⟨Measure how often a head looks at the ideal key⟩ 04-learning-attention.md:1153
/// @brief For each [layer][head], the fraction of queries whose largest
/// weight is on ideal_keys[i], over `count` fresh reversal examples.
template <class T>
std::vector<std::vector<double>> ideal_key_agreement(
    const TinyModel<T>& model, const std::vector<std::size_t>& ideal_keys,
    std::size_t count, std::mt19937_64& rng)
{
    const std::size_t n = model.shape.n;
    std::vector<std::vector<double>> agreement(
        model.shape.layers, std::vector<double>(model.shape.heads, 0.0));
    for (std::size_t s = 0; s < count; ++s) {
        const auto maps =
            attention_maps(model, reversal_example(n, model.shape.vocab, rng).tokens);
        for (std::size_t l = 0; l < maps.size(); ++l)
            for (std::size_t h = 0; h < maps[l].size(); ++h)
                for (std::size_t i = 0; i < n; ++i) {
                    const double* row = maps[l][h].data() + i * n;
                    const std::size_t argmax =
                        std::size_t(std::max_element(row, row + n) - row);
                    agreement[l][h] += (argmax == ideal_keys[i]) / double(count * n);
                }
    }
    return agreement;
}

// ⟨Save and load the model⟩ 04-learning-attention.md:1187
/// @brief Write `model` as text: a header, the
/// shape, then every parameter matrix by name.
template <class T>
void save_model(const std::filesystem::path& path, const TinyModel<T>& model)
{
    std::ofstream out(path);
    const TinyModelShape& s = model.shape;
    out << "tiny-attention-model 1\nshape " << s.vocab << ' ' << s.n << ' ' << s.d_model
        << ' ' << s.heads << ' ' << s.layers << '\n'
        << std::setprecision(std::numeric_limits<T>::max_digits10);
    for (const auto& [name, matrix] : parameters(model)) {
        out << name << ' ' << matrix->shape(0) << ' ' << matrix->shape(1) << '\n';
        for (std::size_t i = 0; i < matrix->shape(0); ++i)
            for (std::size_t j = 0; j < matrix->shape(1); ++j)
                out << (*matrix)(i, j) << (j + 1 < matrix->shape(1) ? ' ' : '\n');
    }
    if (!out) throw std::runtime_error("cannot write the model to " + path.string());
}

/// @brief Read a model written by save_model; throws
/// std::runtime_error on anything unexpected.
template <class T>
TinyModel<T> load_model(const std::filesystem::path& path)
{
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open the model file " + path.string());
    std::string magic, word;
    int version = 0;
    TinyModelShape s;
    in >> magic >> version >> word >> s.vocab >> s.n >> s.d_model >> s.heads >>
        s.layers;
    if (!in || magic != "tiny-attention-model" || version != 1 || word != "shape")
        throw std::runtime_error(path.string() +
                                 " is not a tiny attention model (version 1)");
    TinyModel<T> model = zero_model<T>(s);
    for (const auto& [name, matrix] : parameters(model)) {
        std::string read_name;
        std::size_t rows = 0, cols = 0;
        in >> read_name >> rows >> cols;
        if (!in || read_name != name || rows != matrix->shape(0) ||
            cols != matrix->shape(1))
            throw std::runtime_error(path.string() + ": expected " + name + " here");
        for (T& value : *matrix) {
            // wider than T, so even subnormal values of T read back exactly
            long double read;
            if (!(in >> read))
                throw std::runtime_error(path.string() + ": " + name + " is short");
            value = static_cast<T>(read);
        }
    }
    return model;
}

// ⟨Save and load attention snapshots⟩ 04-learning-attention.md:1245
/// @brief The attention of every head on one probe sequence at one training step.
struct AttentionSnapshot {
    std::size_t step = 0;
    std::vector<std::vector<xt::xtensor<double, 2>>> maps;  ///< [layer][head], each n×n
};

/// @brief Write snapshots taken on `probe` (token ids) as text.
inline void save_snapshots(const std::filesystem::path& path,
                           const std::vector<std::size_t>& probe,
                           const std::vector<AttentionSnapshot>& snapshots)
{
    std::ofstream out(path);
    const std::size_t layers = snapshots.empty() ? 0 : snapshots[0].maps.size();
    const std::size_t heads = layers ? snapshots[0].maps[0].size() : 0;
    out << "attention-snapshots 1\nprobe " << probe.size();
    for (std::size_t t : probe) out << ' ' << t;
    out << "\nlayers " << layers << " heads " << heads << " snapshots "
        << snapshots.size() << '\n'
        << std::setprecision(std::numeric_limits<double>::max_digits10);
    for (const AttentionSnapshot& snapshot : snapshots) {
        out << "step " << snapshot.step << '\n';
        for (const auto& layer : snapshot.maps)
            for (const xt::xtensor<double, 2>& P : layer)
                for (std::size_t i = 0; i < P.shape(0); ++i)
                    for (std::size_t j = 0; j < P.shape(1); ++j)
                        out << P(i, j) << (j + 1 < P.shape(1) ? ' ' : '\n');
    }
    if (!out) throw std::runtime_error("cannot write snapshots to " + path.string());
}

/// @brief Read snapshots written by save_snapshots;
/// `probe` receives the probe's token ids.
inline std::vector<AttentionSnapshot> load_snapshots(const std::filesystem::path& path,
                                                     std::vector<std::size_t>& probe)
{
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open the snapshot file " + path.string());
    std::string magic, word;
    int version = 0;
    std::size_t n = 0, layers = 0, heads = 0, count = 0;
    in >> magic >> version >> word >> n;
    if (!in || magic != "attention-snapshots" || version != 1 || word != "probe")
        throw std::runtime_error(path.string() +
                                 " is not an attention snapshot file (version 1)");
    probe.assign(n, 0);
    for (std::size_t& t : probe) in >> t;
    in >> word >> layers >> word >> heads >> word >> count;
    std::vector<AttentionSnapshot> snapshots(count);
    for (AttentionSnapshot& snapshot : snapshots) {
        in >> word >> snapshot.step;
        snapshot.maps.assign(layers, std::vector<xt::xtensor<double, 2>>(
                                         heads, xt::zeros<double>({n, n})));
        for (auto& layer : snapshot.maps)
            for (xt::xtensor<double, 2>& P : layer)
                for (double& value : P) in >> value;
    }
    if (!in) throw std::runtime_error(path.string() + " is short or malformed");
    return snapshots;
}

}  // namespace attn
