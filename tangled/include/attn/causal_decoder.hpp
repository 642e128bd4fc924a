// Generated from chapters/16-decoding.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 16: chapter 4's tiny model made causal, trained on next tokens, and
/// run as a decoder with a KV cache (step by step, or prefilled).

#include <algorithm>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/kv_cache.hpp"
#include "attn/masked_attention.hpp"
#include "attn/multi_head_attention.hpp"
#include "attn/tiny_model.hpp"

namespace attn {

// ⟨Describe the next-token reversal task⟩ 16-decoding.md:234
/// @brief k letters, a separator, the k letters reversed: "dcw|wcd" for k = 3.
struct ReversalTask {
    std::size_t letters = 6;  ///< k
    /// Token ids: a–z are 0–25, the separator '|' is 26.
    std::size_t vocab() const { return 27; }
    std::size_t separator() const { return 26; }
    /// Tokens in a full sequence, 2k + 1; a model reads at most the first 2k.
    std::size_t length() const { return 2 * letters + 1; }
    std::size_t context() const { return 2 * letters; }
};

/// @brief A random sequence: k letters, the separator, the letters reversed.
inline std::vector<std::size_t> reversal_sequence(const ReversalTask& task,
                                                  std::mt19937_64& rng)
{
    std::uniform_int_distribution<std::size_t> letter(0, 25);
    std::vector<std::size_t> tokens(task.length());
    for (std::size_t i = 0; i < task.letters; ++i) tokens[i] = letter(rng);
    tokens[task.letters] = task.separator();
    for (std::size_t i = 0; i < task.letters; ++i)
        tokens[task.letters + 1 + i] = tokens[task.letters - 1 - i];
    return tokens;
}

/// @brief The model for the task: chapter 4's sizes, position embeddings for 2k tokens.
inline TinyModelShape causal_model_shape(const ReversalTask& task)
{
    TinyModelShape shape;
    shape.vocab = task.vocab();
    shape.n = task.context();
    return shape;
}

/// @brief Letters for figures: a–z and '|'.
inline std::vector<std::string> task_letters(const std::vector<std::size_t>& tokens)
{
    std::vector<std::string> letters;
    for (std::size_t t : tokens)
        letters.push_back(t == 26 ? "|" : std::string(1, char('a' + t)));
    return letters;
}

// ⟨Attend with the causal mask in every head⟩ 16-decoding.md:288
/// @brief Softmax attention under the causal mask, as the attention of each head of a
/// layer: query i attends keys j ≤ i. Its backward pass is softmax attention's.
struct CausalSoftmaxAttention : SoftmaxAttention {
    /// @brief One head's weights. @param Q n×d_k; @param K n×d_k @return P, n×n
    template <class T>
    xt::xtensor<T, 2> weights(const xt::xtensor<T, 2>& Q,
                              const xt::xtensor<T, 2>& K) const
    {
        return attention_weights(Q, K, causal_mask(Q.shape(0)));
    }
};

// ⟨Run the causal model forward⟩ 16-decoding.md:302
/// @brief Embed `tokens` (at most shape.n of them) into X_0, n×d_model.
template <class T>
xt::xtensor<T, 2> embed_tokens(const TinyModel<T>& model,
                               const std::vector<std::size_t>& tokens)
{
    const std::size_t n = tokens.size(), d = model.shape.d_model;
    if (n == 0 || n > model.shape.n)
        throw std::invalid_argument("causal model: " + std::to_string(n) +
                                    " tokens, the model has positions for 1 to " +
                                    std::to_string(model.shape.n));
    xt::xtensor<T, 2> X = xt::zeros<T>({n, d});  // n×d_model
    for (std::size_t i = 0; i < n; ++i) {
        if (tokens[i] >= model.shape.vocab)
            throw std::invalid_argument("causal model: token id out of range");
        for (std::size_t c = 0; c < d; ++c)
            X(i, c) =
                model.token_embedding(tokens[i], c) + model.position_embedding(i, c);
    }
    return X;
}

/// @brief The causal model on a prefix of n ≤ shape.n tokens, batched (BLAS).
/// @param attention what each head computes (causal softmax attention unless given)
/// @return logits n×vocab (row i predicts token i+1) with every intermediate value
template <class T, class Attention = CausalSoftmaxAttention>
TinyModelForward<T> causal_model_forward(const TinyModel<T>& model,
                                         const std::vector<std::size_t>& tokens,
                                         const Attention& attention = {})
{
    return residual_forward(embed_tokens(model, tokens), model.layers.size(),
                            model.W_out,
                            [&](std::size_t l, const xt::xtensor<T, 2>& X_l) {
                                return attention_layer_forward(model.layers[l], X_l,
                                                               attention);
                            });
}

// ⟨Train the causal model on next tokens⟩ 16-decoding.md:352
/// @brief Train `model` with Adam to predict the reversed letters, one token ahead;
/// `adjust(grad)` sees the summed gradient before every update.
/// @param attention what each head computes (causal softmax attention unless given)
/// @return the mean loss per scored token and the accuracy on each recorded batch
template <class T, class AdjustGradient, class Attention = CausalSoftmaxAttention>
std::vector<TrainingPoint> train_causal_reversal(TinyModel<T>& model,
                                                 const ReversalTask& task,
                                                 const TrainingConfig& config,
                                                 std::mt19937_64& rng,
                                                 AdjustGradient&& adjust,
                                                 const Attention& attention = {})
{
    const std::size_t k = task.letters, n = task.context(), vocab = model.shape.vocab;
    if (model.shape.n < n || vocab != task.vocab())
        throw std::invalid_argument(
            "train_causal_reversal: the model does not fit the task");
    Adam<T> adam(model, config.learning_rate);
    const T weight = T(1) / T(config.batch * k);  // the mean over the scored tokens
    std::vector<TrainingPoint> curve;
    for (std::size_t step = 0; step < config.steps; ++step) {
        TinyModel<T> grad = zero_model<T>(model.shape);
        double loss = 0;
        std::size_t correct = 0;
        for (std::size_t b = 0; b < config.batch; ++b) {
            const std::vector<std::size_t> sequence = reversal_sequence(task, rng);
            const std::vector<std::size_t> inputs(sequence.begin(),
                                                  sequence.begin() + n);
            const std::vector<std::size_t> targets(sequence.begin() + k + 1,
                                                   sequence.end());
            const TinyModelForward<T> f =
                causal_model_forward(model, inputs, attention);
            // rows k … 2k−1, k×vocab: the predictions after the separator
            const xt::xtensor<T, 2> scored_logits =
                xt::view(f.logits, xt::range(k, n), xt::all());
            SequenceLoss<T> scored = cross_entropy(scored_logits, targets);
            xt::xtensor<T, 2> d_logits = xt::zeros<T>({n, vocab});  // n×vocab
            xt::view(d_logits, xt::range(k, n), xt::all()) = scored.d_logits * weight;
            model_backward(model, inputs, f, d_logits, grad, attention);
            loss += scored.loss;
            correct += scored.correct;
        }
        if (step % config.record_every == 0 || step + 1 == config.steps)
            curve.push_back({step, loss / double(config.batch * k),
                             double(correct) / double(config.batch * k)});
        adjust(grad);
        adam.step(model, grad);
    }
    return curve;
}

/// @brief train_causal_reversal with the gradient left as it is.
template <class T>
std::vector<TrainingPoint> train_causal_reversal(TinyModel<T>& model,
                                                 const ReversalTask& task,
                                                 const TrainingConfig& config,
                                                 std::mt19937_64& rng)
{
    return train_causal_reversal(model, task, config, rng, [](TinyModel<T>&) {});
}

// ⟨Multiply a row by a matrix⟩ 16-decoding.md:426
namespace detail {
/// y = x·W for one row x (d_in) and W (d_in×d_out): y_c = Σ_i x_i W_ic, i ascending.
template <class T>
xt::xtensor<T, 1> row_times(const T* x, const xt::xtensor<T, 2>& W)
{
    const std::size_t d_in = W.shape(0), d_out = W.shape(1);
    xt::xtensor<T, 1> y = xt::zeros<T>({d_out});
    for (std::size_t i = 0; i < d_in; ++i) {
        const T x_i = x[i];
        const T* W_i = W.data() + i * d_out;
        for (std::size_t c = 0; c < d_out; ++c) y(c) += x_i * W_i[c];
    }
    return y;
}

/// Columns [head·width, (head+1)·width) of a row, as a row of its own.
template <class T>
xt::xtensor<T, 1> row_block(const xt::xtensor<T, 1>& row, std::size_t head,
                            std::size_t width)
{
    xt::xtensor<T, 1> block = xt::zeros<T>({width});
    for (std::size_t c = 0; c < width; ++c) block(c) = row(head * width + c);
    return block;
}
}  // namespace detail

// ⟨Run one token through every layer⟩ 16-decoding.md:458
/// @brief One step of the causal model: token `token` at position p goes through every
/// layer, where head `head` of layer l returns attend_head(l, head, q, k, v) for the
/// token's query, key and value (d_k each). @return the next token's logits (vocab)
template <class T, class AttendHead>
xt::xtensor<T, 1> decode_token(const TinyModel<T>& model, std::size_t token,
                               std::size_t p, AttendHead&& attend_head)
{
    const TinyModelShape& s = model.shape;
    const std::size_t d_k = s.d_model / s.heads;
    if (p >= s.n)
        throw std::invalid_argument("decode_token: the model has positions for " +
                                    std::to_string(s.n) + " tokens only");
    if (token >= s.vocab)
        throw std::invalid_argument("decode_token: token id out of range");
    xt::xtensor<T, 1> x = xt::zeros<T>({s.d_model});  // the residual row, d_model
    for (std::size_t c = 0; c < s.d_model; ++c)
        x(c) = model.token_embedding(token, c) + model.position_embedding(p, c);
    for (std::size_t l = 0; l < s.layers; ++l) {
        const AttentionLayer<T>& layer = model.layers[l];
        // this token's query, key and value in every head, d_model each
        const xt::xtensor<T, 1> q = detail::row_times(x.data(), layer.W_q);
        const xt::xtensor<T, 1> k = detail::row_times(x.data(), layer.W_k);
        const xt::xtensor<T, 1> v = detail::row_times(x.data(), layer.W_v);
        xt::xtensor<T, 1> concat = xt::zeros<T>({s.d_model});  // the heads' outputs
        for (std::size_t head = 0; head < s.heads; ++head) {
            using detail::row_block;
            const xt::xtensor<T, 1> o =
                attend_head(l, head, row_block(q, head, d_k), row_block(k, head, d_k),
                            row_block(v, head, d_k));
            for (std::size_t c = 0; c < d_k; ++c) concat(head * d_k + c) = o(c);
        }
        const xt::xtensor<T, 1> y = detail::row_times(concat.data(), layer.W_o);
        for (std::size_t c = 0; c < s.d_model; ++c) x(c) = x(c) + y(c);  // residual
    }
    return detail::row_times(x.data(), model.W_out);  // vocab
}

// ⟨Decode one token with the cache⟩ 16-decoding.md:503
/// @brief Runs a TinyModel causally, one token per step, keeping a KV cache per layer
/// and head. The model must outlive the decoder.
template <class T>
class Decoder {
public:
    /// @brief An empty decoder: one empty cache per layer and head of `model`.
    explicit Decoder(const TinyModel<T>& model) : model_(&model)
    {
        const std::size_t d_k = model.shape.d_model / model.shape.heads;
        const std::vector<KVCache<T>> layer(model.shape.heads, KVCache<T>(d_k, d_k));
        caches_.assign(model.shape.layers, layer);
    }

    /// @brief Read one token at position position(); return the next token's logits.
    xt::xtensor<T, 1> step(std::size_t token)
    {
        using Row = xt::xtensor<T, 1>;
        return decode_token(*model_, token, position(),
                            [&](std::size_t l, std::size_t head, const Row& q,
                                const Row& k, const Row& v) {
                                KVCache<T>& cache = caches_[l][head];
                                cache.append(k, v);  // first: the token sees itself
                                return cache.attend(q);
                            });
    }

    // ⟨Prefill the decoder with a whole prompt⟩ 16-decoding.md:752
    /// @brief Read a whole prompt at once with matrix products (BLAS), filling the caches;
    /// the decoder must be empty. @return the logits (vocab) of the token after the prompt
    xt::xtensor<T, 1> prefill(const std::vector<std::size_t>& prompt)
    {
        if (position() != 0)
            throw std::invalid_argument("Decoder::prefill: the decoder is not empty");
        const TinyModelShape& s = model_->shape;
        const std::size_t L = prompt.size(), d_k = s.d_model / s.heads;
        xt::xtensor<T, 2> X = embed_tokens(*model_, prompt);  // L×d_model
        const Mask causal = causal_mask(L);  // L×L
        for (std::size_t l = 0; l < s.layers; ++l) {
            const AttentionLayer<T>& layer = model_->layers[l];
            const xt::xtensor<T, 2> Q = detail::matmul(X, layer.W_q);  // L×d_model
            const xt::xtensor<T, 2> K = detail::matmul(X, layer.W_k);  // L×d_model
            const xt::xtensor<T, 2> V = detail::matmul(X, layer.W_v);  // L×d_model
            xt::xtensor<T, 2> concat = xt::zeros<T>({L, s.d_model});  // L×d_model
            for (std::size_t head = 0; head < s.heads; ++head) {
                const xt::xtensor<T, 2> K_h = head_columns(K, head, d_k);  // L×d_k
                const xt::xtensor<T, 2> V_h = head_columns(V, head, d_k);  // L×d_v
                set_head_columns(
                    concat, head, d_k,
                    scaled_dot_product_attention(
                        xt::xtensor<T, 2>(head_columns(Q, head, d_k)), K_h, V_h, causal));
                caches_[l][head].reserve(L);
                for (std::size_t i = 0; i < L; ++i)
                    caches_[l][head].append(xt::row(K_h, i), xt::row(V_h, i));
            }
            X += detail::matmul(concat, layer.W_o);  // residual
        }
        const xt::xtensor<T, 1> last = xt::row(X, L - 1);
        return detail::row_times(last.data(), model_->W_out);  // vocab
    }

    /// Tokens read so far (the length of every cache).
    std::size_t position() const { return caches_[0][0].size(); }
    /// @brief Forget every token after the first `tokens`.
    void truncate(std::size_t tokens)
    {
        for (auto& layer : caches_)
            for (KVCache<T>& cache : layer) cache.truncate(tokens);
    }
    /// @brief Make room for `tokens` tokens in every cache.
    void reserve(std::size_t tokens)
    {
        for (auto& layer : caches_)
            for (KVCache<T>& cache : layer) cache.reserve(tokens);
    }
    /// Bytes held by all the caches.
    std::size_t cache_bytes() const
    {
        std::size_t bytes = 0;
        for (const auto& layer : caches_)
            for (const KVCache<T>& cache : layer) bytes += cache.bytes();
        return bytes;
    }

private:
    const TinyModel<T>* model_;
    std::vector<std::vector<KVCache<T>>> caches_;  // [layer][head]
};

// ⟨Run the causal model forward row by row⟩ 16-decoding.md:572
/// @brief The causal model on `tokens`, layer after layer, each row with the decoder's
/// row functions: the same numbers as the decoder, computed without a cache.
/// @return logits, n×vocab (row i predicts token i+1)
template <class T>
xt::xtensor<T, 2> causal_forward_by_rows(const TinyModel<T>& model,
                                         const std::vector<std::size_t>& tokens)
{
    const TinyModelShape& s = model.shape;
    const std::size_t n = tokens.size(), d = s.d_model, d_k = d / s.heads;
    xt::xtensor<T, 2> X = embed_tokens(model, tokens);  // n×d_model
    for (const AttentionLayer<T>& layer : model.layers) {
        std::vector<xt::xtensor<T, 1>> q(n), k(n), v(n);  // n rows of d_model each
        for (std::size_t i = 0; i < n; ++i) {
            q[i] = detail::row_times(&X(i, 0), layer.W_q);
            k[i] = detail::row_times(&X(i, 0), layer.W_k);
            v[i] = detail::row_times(&X(i, 0), layer.W_v);
        }
        xt::xtensor<T, 2> concat = xt::zeros<T>({n, d});  // n×d_model
        for (std::size_t head = 0; head < s.heads; ++head) {
            std::vector<T> K_h, V_h;  // this head's keys and values, n×d_k, row-major
            for (std::size_t j = 0; j < n; ++j)
                for (std::size_t c = 0; c < d_k; ++c) {
                    K_h.push_back(k[j](head * d_k + c));
                    V_h.push_back(v[j](head * d_k + c));
                }
            for (std::size_t i = 0; i < n; ++i) {  // query i sees keys 0 … i
                const xt::xtensor<T, 1> q_h = detail::row_block(q[i], head, d_k);
                const xt::xtensor<T, 1> o = finish_state(attend_keys(
                    q_h.data(), K_h.data(), V_h.data(), 0, i + 1, d_k, d_k));
                for (std::size_t c = 0; c < d_k; ++c) concat(i, head * d_k + c) = o(c);
            }
        }
        for (std::size_t i = 0; i < n; ++i) {
            const xt::xtensor<T, 1> y = detail::row_times(&concat(i, 0), layer.W_o);
            for (std::size_t c = 0; c < d; ++c) X(i, c) = X(i, c) + y(c);  // residual
        }
    }
    xt::xtensor<T, 2> logits = xt::zeros<T>({n, s.vocab});  // n×vocab
    for (std::size_t i = 0; i < n; ++i)
        xt::row(logits, i) = detail::row_times(&X(i, 0), model.W_out);
    return logits;
}

// ⟨Generate greedily with and without the cache⟩ 16-decoding.md:625
/// @brief The tokens a generation wrote and the logits (vocab each) it chose them from.
template <class T>
struct Generation {
    std::vector<std::size_t> tokens;
    std::vector<xt::xtensor<T, 1>> logits;
};

/// The index of the largest logit (the first of equal ones).
template <class T>
std::size_t greedy_token(const xt::xtensor<T, 1>& logits)
{
    return std::size_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

namespace detail {
/// Throw std::invalid_argument unless a prompt of `prompt` ≥ 1 tokens and `count`
/// written tokens fit the model's positions (the last token written is never read).
inline void check_generation(const TinyModelShape& shape, std::size_t prompt,
                             std::size_t count)
{
    if (prompt == 0) throw std::invalid_argument("generate: the prompt is empty");
    if (prompt + count > shape.n + 1)
        throw std::invalid_argument(
            "generate: prompt and output exceed the model's positions");
}
}  // namespace detail

/// @brief Read `prompt`, then write `count` tokens greedily, with a KV cache.
template <class T>
Generation<T> generate_with_cache(const TinyModel<T>& model,
                                  const std::vector<std::size_t>& prompt,
                                  std::size_t count)
{
    detail::check_generation(model.shape, prompt.size(), count);
    Decoder<T> decoder(model);
    Generation<T> out;
    xt::xtensor<T, 1> logits;
    for (std::size_t token : prompt) logits = decoder.step(token);
    for (std::size_t t = 0; t < count; ++t) {
        out.logits.push_back(logits);
        out.tokens.push_back(greedy_token(logits));
        if (t + 1 < count) logits = decoder.step(out.tokens.back());
    }
    return out;
}

/// @brief The same generation without a cache: every step recomputes the whole prefix.
template <class T>
Generation<T> generate_by_recomputing(const TinyModel<T>& model,
                                      const std::vector<std::size_t>& prompt,
                                      std::size_t count)
{
    detail::check_generation(model.shape, prompt.size(), count);
    std::vector<std::size_t> sequence = prompt;
    Generation<T> out;
    for (std::size_t t = 0; t < count; ++t) {
        const xt::xtensor<T, 2> logits = causal_forward_by_rows(model, sequence);
        out.logits.push_back(xt::row(logits, sequence.size() - 1));
        out.tokens.push_back(greedy_token(out.logits.back()));
        sequence.push_back(out.tokens.back());
    }
    return out;
}

// ⟨Score a causal model on held-out words⟩ 16-decoding.md:699
/// @brief A causal model's quality on held-out words of the reversal task.
struct WordQuality {
    double loss = 0;           ///< mean cross-entropy per scored letter
    double word_accuracy = 0;  ///< fraction of words written entirely right
};

/// @brief Loss and greedy word accuracy on `count` fresh words of a model whose
/// logits on a prefix are `logits_of(tokens)` (n×vocab, elements of type T).
template <class T, class Logits>
WordQuality evaluate_words(Logits&& logits_of, const ReversalTask& task,
                           std::size_t count, std::mt19937_64& rng)
{
    const std::size_t k = task.letters;
    WordQuality quality;
    for (std::size_t s = 0; s < count; ++s) {
        const std::vector<std::size_t> sequence = reversal_sequence(task, rng);
        const std::vector<std::size_t> inputs(sequence.begin(),
                                              sequence.begin() + task.context());
        const std::vector<std::size_t> targets(sequence.begin() + k + 1,
                                               sequence.end());
        const xt::xtensor<T, 2> logits = logits_of(inputs);
        const xt::xtensor<T, 2> scored =
            xt::view(logits, xt::range(k, task.context()), xt::all());  // k×vocab
        quality.loss += cross_entropy(scored, targets).loss / double(k * count);
        std::vector<std::size_t> written(sequence.begin(), sequence.begin() + k + 1);
        while (written.size() < task.length()) {  // greedy, recomputing each step
            const xt::xtensor<T, 2> step = logits_of(written);
            written.push_back(
                greedy_token(xt::xtensor<T, 1>(xt::row(step, written.size() - 1))));
        }
        quality.word_accuracy += double(written == sequence) / double(count);
    }
    return quality;
}

}  // namespace attn
