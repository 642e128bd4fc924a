// Chapter 5: attention rollout and the figures of what a model attends to.
#define BOOST_TEST_MODULE ch05_visualizing_attention
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/plot.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"
#include "attn/tiny_model.hpp"
#include "attn/visualize.hpp"
#include "test_support.hpp"

using test_support::check_close;
using test_support::scratch_dir;

namespace {

/// A random row-stochastic n×n matrix (a softmax of random scores).
xt::xtensor<double, 2> random_attention(std::size_t n, std::mt19937_64& rng)
{
    return attn::softmax_rows(attn::random_normal<double>(n, n, 2.0, rng));
}

/// How many pieces of text in `texts` are exactly `wanted`.
std::size_t count(const std::vector<std::string>& texts, const std::string& wanted)
{
    return std::size_t(std::count(texts.begin(), texts.end(), wanted));
}

/// A model of 2 layers × 3 heads with random weights (the figures must show any model's attention).
attn::TinyModel<float> random_model()
{
    std::mt19937_64 rng(5);
    attn::TinyModelShape shape;
    shape.d_model = 12, shape.heads = 3;
    return attn::init_tiny_model<float>(shape, rng);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(rollout)

BOOST_AUTO_TEST_CASE(rollout_rows_sum_to_one)
{
    std::mt19937_64 rng(1);
    const std::vector<xt::xtensor<double, 2>> layers = {random_attention(7, rng), random_attention(7, rng),
                                                        random_attention(7, rng)};
    const xt::xtensor<double, 2> R = attn::attention_rollout(layers);
    for (std::size_t i = 0; i < 7; ++i) {
        BOOST_TEST(std::abs(double(xt::sum(xt::row(R, i))()) - 1.0) < 1e-12);
        for (std::size_t j = 0; j < 7; ++j) BOOST_TEST(R(i, j) >= 0.0);
    }
}

BOOST_AUTO_TEST_CASE(rollout_of_one_layer_is_half_attention_half_identity)
{
    std::mt19937_64 rng(2);
    const xt::xtensor<double, 2> A = random_attention(5, rng);
    const xt::xtensor<double, 2> expected = 0.5 * A + 0.5 * xt::eye<double>(5);
    check_close(attn::attention_rollout({A}), expected, 1e-14, 1e-15, "one layer");
}

BOOST_AUTO_TEST_CASE(rollout_multiplies_later_layers_on_the_left)
{
    std::mt19937_64 rng(3);
    const xt::xtensor<double, 2> A1 = random_attention(4, rng), A2 = random_attention(4, rng);
    const xt::xtensor<double, 2> M1 = 0.5 * A1 + 0.5 * xt::eye<double>(4), M2 = 0.5 * A2 + 0.5 * xt::eye<double>(4);
    xt::xtensor<double, 2> expected = xt::zeros<double>({4, 4});  // M2·M1 by a plain loop
    for (std::size_t i = 0; i < 4; ++i)
        for (std::size_t j = 0; j < 4; ++j)
            for (std::size_t k = 0; k < 4; ++k) expected(i, j) += M2(i, k) * M1(k, j);
    check_close(attn::attention_rollout({A1, A2}), expected, 1e-14, 1e-15, "two layers");
}

BOOST_AUTO_TEST_CASE(a_fully_masked_row_rolls_out_to_itself)
{
    // A row of zeros (nothing could be attended) keeps only the residual: all weight on itself.
    xt::xtensor<double, 2> A = {{0.0, 0.0, 0.0}, {0.5, 0.5, 0.0}, {0.2, 0.3, 0.5}};
    const xt::xtensor<double, 2> R = attn::attention_rollout({A});
    BOOST_TEST(R(0, 0) == 1.0);
    BOOST_TEST(std::abs(double(xt::sum(xt::row(R, 1))()) - 1.0) < 1e-15);
}

BOOST_AUTO_TEST_CASE(averaged_heads_keep_rows_summing_to_one)
{
    std::mt19937_64 rng(4);
    const xt::xtensor<double, 2> mean = attn::average_heads({random_attention(6, rng), random_attention(6, rng)});
    for (std::size_t i = 0; i < 6; ++i) BOOST_TEST(std::abs(double(xt::sum(xt::row(mean, i))()) - 1.0) < 1e-12);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(figures)

BOOST_AUTO_TEST_CASE(the_head_grid_names_every_head_and_labels_every_letter)
{
    const attn::TinyModel<float> model = random_model();
    const auto tokens = attn::letter_tokens("algorithms");
    const auto dir = scratch_dir("ch05_test_heads");
    attn::plot::head_grid(dir / "heads.svg", attn::attention_maps(model, tokens), attn::token_letters(tokens));
    const auto texts = test_support::svg_texts(dir / "heads.svg");
    for (std::size_t l = 0; l < 2; ++l)
        for (std::size_t h = 0; h < 3; ++h)
            BOOST_TEST(count(texts, "layer " + std::to_string(l) + ", head " + std::to_string(h)) == 1u);
    // every letter labels a row and a column of each of the 6 panels
    for (const std::string letter : {"a", "l", "g", "o", "r", "i", "t", "h", "m", "s"})
        BOOST_TEST(count(texts, letter) == 2u * 6u, letter);
    BOOST_TEST(count(texts, "query") == 2u);  // the left column, one per layer
    BOOST_TEST(count(texts, "key") == 3u);    // the bottom row, one per head
    BOOST_TEST(count(texts, "attention weight") == 1u);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(the_plotted_data_equals_the_models_attention)
{
    const attn::TinyModel<float> model = random_model();
    const auto tokens = attn::letter_tokens("attentions");
    const auto maps = attn::attention_maps(model, tokens);
    const auto dir = scratch_dir("ch05_test_data");
    attn::plot::head_grid(dir / "heads.svg", maps, attn::token_letters(tokens));
    const auto panels = attn::plot::read_panels_tsv(dir / "heads.svg");
    BOOST_TEST_REQUIRE(panels.size() == 6u);
    for (std::size_t l = 0, k = 0; l < maps.size(); ++l)
        for (std::size_t h = 0; h < maps[l].size(); ++h, ++k)
            check_close(panels[k], maps[l][h], 1e-8, 1e-9, "panel " + std::to_string(k));
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(every_map_equals_attention_recomputed_by_plain_loops)
{
    // Independently of the model's forward pass, in double: X_0 = token + position
    // embedding; in each layer head h's queries and keys are columns [h·d_k, (h+1)·d_k)
    // of X_l·W_q and X_l·W_k, and X_{l+1} = X_l + concat(P_h·V_h)·W_o.
    const attn::TinyModel<float> model = random_model();
    const auto tokens = attn::letter_tokens("attentions");
    const auto maps = attn::attention_maps(model, tokens);
    const std::size_t n = tokens.size(), d = model.shape.d_model, heads = model.shape.heads;
    const std::size_t d_k = d / heads;
    std::vector<std::vector<double>> X(n, std::vector<double>(d));
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t e = 0; e < d; ++e)
            X[i][e] = double(model.token_embedding(tokens[i], e)) + double(model.position_embedding(i, e));
    BOOST_TEST_REQUIRE(maps.size() == model.layers.size());
    for (std::size_t l = 0; l < model.layers.size(); ++l) {
        const auto& layer = model.layers[l];
        auto project = [&](const xt::xtensor<float, 2>& W) {
            std::vector<std::vector<double>> Y(n, std::vector<double>(d, 0.0));
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t c = 0; c < d; ++c)
                    for (std::size_t e = 0; e < d; ++e) Y[i][c] += X[i][e] * double(W(e, c));
            return Y;
        };
        const auto Q = project(layer.W_q), K = project(layer.W_k), V = project(layer.W_v);
        std::vector<std::vector<double>> concat(n, std::vector<double>(d, 0.0));
        for (std::size_t head = 0; head < heads; ++head) {
            xt::xtensor<double, 2> P = xt::zeros<double>({n, n});
            for (std::size_t i = 0; i < n; ++i) {
                std::vector<double> s(n, 0.0);
                for (std::size_t j = 0; j < n; ++j) {
                    for (std::size_t c = head * d_k; c < (head + 1) * d_k; ++c) s[j] += Q[i][c] * K[j][c];
                    s[j] /= std::sqrt(double(d_k));
                }
                const double s_max = *std::max_element(s.begin(), s.end());
                double total = 0;
                for (double& x : s) total += (x = std::exp(x - s_max));
                for (std::size_t j = 0; j < n; ++j) P(i, j) = s[j] / total;
                for (std::size_t j = 0; j < n; ++j)
                    for (std::size_t c = head * d_k; c < (head + 1) * d_k; ++c) concat[i][c] += P(i, j) * V[j][c];
            }
            const std::string name = "layer " + std::to_string(l) + " head " + std::to_string(head);
            check_close(maps[l][head], P, 1e-5, 1e-6, name);
            for (std::size_t i = 0; i < n; ++i)
                BOOST_TEST(std::abs(double(xt::sum(xt::row(maps[l][head], i))()) - 1.0) < 1e-5, name << " row " << i);
        }
        for (std::size_t i = 0; i < n; ++i)  // the residual stream: X_{l+1} = X_l + concat·W_o
            for (std::size_t c = 0; c < d; ++c)
                for (std::size_t e = 0; e < d; ++e) X[i][c] += concat[i][e] * double(layer.W_o(e, c));
    }
}

BOOST_AUTO_TEST_CASE(word_to_word_writes_every_weight_of_every_head)
{
    const attn::TinyModel<float> model = random_model();
    const auto tokens = attn::letter_tokens("algorithms");
    const auto maps = attn::attention_maps(model, tokens);
    const auto dir = scratch_dir("ch05_test_lines");
    attn::plot::word_to_word(dir / "lines.svg", maps, attn::token_letters(tokens), {"first", "second"});
    const auto texts = test_support::svg_texts(dir / "lines.svg");
    for (const std::string letter : {"a", "l", "g", "o", "r", "i", "t", "h", "m", "s"})
        BOOST_TEST(count(texts, letter) == 4u, letter);  // a query and a key in each panel
    for (const std::string label : {"query", "key"}) BOOST_TEST(count(texts, label) == 2u, label);
    for (const std::string label : {"head 0", "head 1", "head 2", "first", "second"})
        BOOST_TEST(count(texts, label) == 1u, label);  // one key for both panels
    std::ifstream data(dir / "lines.tsv");
    std::string header;
    std::getline(data, header);
    std::size_t rows = 0;
    for (std::size_t l, h, i, j; data >> l >> h >> i >> j;) {
        double weight;
        data >> weight;
        BOOST_TEST(std::abs(weight - maps.at(l).at(h)(i, j)) < 1e-8);
        ++rows;
    }
    BOOST_TEST(rows == 2u * 3u * 10u * 10u);
    BOOST_CHECK_THROW(attn::plot::word_to_word(dir / "bad.svg", maps, attn::token_letters(tokens), {"one"}),
                      std::invalid_argument);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(an_animation_holds_every_frame)
{
    std::mt19937_64 rng(6);
    const std::vector<xt::xtensor<double, 2>> frames = {random_attention(4, rng), random_attention(4, rng),
                                                        random_attention(4, rng)};
    const auto dir = scratch_dir("ch05_test_gif");
    attn::plot::animate_heatmaps(dir / "a.gif", frames, {"one", "two", "three"}, {"", {}, {}}, 50);
    std::ifstream gif(dir / "a.gif", std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(gif), {}};
    BOOST_TEST(bytes.substr(0, 6) == "GIF89a");
    std::size_t delays = 0;  // one graphic control extension (21 F9 04) per animation frame
    for (std::size_t at = bytes.find("\x21\xF9\x04"); at != std::string::npos; at = bytes.find("\x21\xF9\x04", at + 1))
        ++delays;
    BOOST_TEST(delays == frames.size());
    std::ifstream data(dir / "a.tsv");
    std::string header;
    std::getline(data, header);
    std::size_t rows = 0;
    for (std::size_t f, i, j; data >> f >> i >> j; ++rows) {
        double value;
        data >> value;
        BOOST_TEST(std::abs(value - frames[f](i, j)) < 1e-8);
    }
    BOOST_TEST(rows == 3u * 4u * 4u);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(the_gallery_counts_allowed_pairs)
{
    xt::xtensor<bool, 2> band = xt::zeros<bool>({4, 4});
    for (std::size_t i = 0; i < 4; ++i) band(i, i) = true;
    BOOST_TEST(attn::plot::pattern_density(band) == 0.25);
    const auto dir = scratch_dir("ch05_test_gallery");
    attn::plot::pattern_gallery(dir / "g.svg", {{"diagonal", band}, {"dense", xt::ones<bool>({4, 4})}});
    const auto texts = test_support::svg_texts(dir / "g.svg");
    BOOST_TEST(count(texts, "diagonal") == 1u);  // each title: the name, then the share
    BOOST_TEST(count(texts, "25.0% of pairs") == 1u);
    BOOST_TEST(count(texts, "dense") == 1u);
    BOOST_TEST(count(texts, "100.0% of pairs") == 1u);
    BOOST_CHECK_THROW(attn::plot::pattern_gallery(dir / "bad.svg", {{"4", band}, {"5", xt::ones<bool>({5, 5})}}),
                      std::invalid_argument);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
