// Generated from chapters/12-reformer.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>

#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/reformer.hpp"

namespace {

// ⟨Make two rows orthonormal⟩ 12-reformer.md:372
/// Gram–Schmidt on the two rows of `rows` (2×d_k): unit length and orthogonal.
xt::xtensor<double, 2> orthonormal_rows(xt::xtensor<double, 2> rows)
{
    const std::size_t d_k = rows.shape(1);
    auto dot = [&](std::size_t a, std::size_t b) {
        double sum = 0;
        for (std::size_t c = 0; c < d_k; ++c) sum += rows(a, c) * rows(b, c);
        return sum;
    };
    const double norm_0 = std::sqrt(dot(0, 0));
    for (std::size_t c = 0; c < d_k; ++c) rows(0, c) /= norm_0;
    const double along = dot(0, 1);
    for (std::size_t c = 0; c < d_k; ++c) rows(1, c) -= along * rows(0, c);
    const double norm_1 = std::sqrt(dot(1, 1));
    for (std::size_t c = 0; c < d_k; ++c) rows(1, c) /= norm_1;
    return rows;
}

// ⟨Measure collisions of two vectors at an angle⟩ 12-reformer.md:348
/// Fraction of `rounds` independent hash rounds in which two unit vectors at angle θ
/// (spanning a random plane of R^d_k) get the same bucket.
double measured_collision_rate(double theta, std::size_t d_k, std::size_t n_buckets,
                               std::size_t rounds, std::mt19937_64& rng)
{
    // 2×d_k
    const xt::xtensor<double, 2> basis = attn::random_normal<double>(2, d_k, 1.0, rng);
    // 2×d_k
    const xt::xtensor<double, 2> e = orthonormal_rows(basis);
    // 2×d_k: x, y
    xt::xtensor<double, 2> pair = xt::zeros<double>({std::size_t(2), d_k});
    for (std::size_t c = 0; c < d_k; ++c) {
        pair(0, c) = e(0, c);
        pair(1, c) = std::cos(theta) * e(0, c) + std::sin(theta) * e(1, c);
    }
    const auto buckets = attn::lsh_buckets(pair, n_buckets, rounds, rng());  // rounds×2
    std::size_t collisions = 0;
    for (std::size_t r = 0; r < rounds; ++r)
        collisions += buckets(r, 0) == buckets(r, 1);
    return double(collisions) / double(rounds);
}

// ⟨Draw measured points on their theory curves⟩ 12-reformer.md:920
/// Draw series in (theory, measured) pairs: the curve as a line, named in the key
/// below the plot, the points in the same colour.
void draw_measured_on_theory(const std::filesystem::path& path,
                             const std::vector<attn::Series>& pairs)
{
    attn::plot::write_series_tsv(path, pairs);
    attn::plot::Figure figure(path);
    figure << "set xlabel 'angle θ between the two vectors (degrees)'\nset ylabel "
              "'Pr[h(x) = h(y)]'\n"
           << "set key below left Left reverse vertical maxrows 4 height 1 nobox "
              "noopaque\nset xrange [0:180]\nset xtics 30\nset yrange [0:1]\nplot ";
    for (std::size_t s = 0; s < pairs.size(); ++s)
        figure << (s ? ", " : "") << "'-' using 1:2 with "
               << (s % 2 ? "points" : "lines") << " linestyle " << s / 2 + 1
               << (s % 2 ? " notitle" : " title " + attn::plot::quote(pairs[s].label));
    figure << "\n";
    for (const attn::Series& curve : pairs) attn::plot::send_series(figure, curve);
}

// ⟨Put rows and columns in another order⟩ 12-reformer.md:993
/// The rows and columns of `matrix` (n×n) in the order `order`: entry (a, b) is
/// matrix(order[a], order[b]).
template <class T>
xt::xtensor<T, 2> reorder(const xt::xtensor<T, 2>& matrix,
                          const std::vector<std::size_t>& order)
{
    const std::size_t n = order.size();
    xt::xtensor<T, 2> reordered = xt::zeros<T>({n, n});  // n×n
    for (std::size_t a = 0; a < n; ++a)
        for (std::size_t b = 0; b < n; ++b)
            reordered(a, b) = matrix(order[a], order[b]);
    return reordered;
}

/// Tic labels for tokens drawn group by group: each group's name at its first token,
/// nothing at the others.
std::vector<std::string> name_each_group(const std::vector<std::string>& group_of)
{
    std::vector<std::string> labels(group_of.size());
    for (std::size_t a = 0; a < group_of.size(); ++a)
        if (a == 0 || group_of[a] != group_of[a - 1]) labels[a] = group_of[a];
    return labels;
}

// ⟨Measure the weight the views miss⟩ 12-reformer.md:1197
/// Mean over queries of the dense weight on keys the pattern does not allow.
double missed_weight(const xt::xtensor<double, 2>& dense_weights,
                     const xt::xtensor<bool, 2>& allowed)
{
    const std::size_t n = dense_weights.shape(0);
    double missed = 0;
    for (std::size_t k = 0; k < dense_weights.size(); ++k)
        if (!allowed.data()[k]) missed += dense_weights.data()[k];
    return missed / double(n);
}

// ⟨Count how full the buckets are⟩ 12-reformer.md:1454
/// Bucket sizes of one hashing round, largest first.
std::vector<double> bucket_sizes(const xt::xtensor<float, 2>& QK, std::size_t n_buckets,
                                 std::uint64_t seed)
{
    const xt::xtensor<std::size_t, 2> buckets =
        attn::lsh_buckets(QK, n_buckets, 1, seed);  // 1×n
    std::vector<double> size(n_buckets, 0.0);
    for (std::size_t i = 0; i < QK.shape(0); ++i) size[buckets(0, i)] += 1;
    std::sort(size.begin(), size.end(), std::greater<double>());
    return size;
}

/// Fraction of the n queries that sit in a bucket larger than `chunk_len`.
double fraction_in_overfull_buckets(const std::vector<double>& size,
                                    std::size_t chunk_len, std::size_t n)
{
    double crowded = 0;
    for (double s : size)
        if (s > double(chunk_len)) crowded += s;
    return crowded / double(n);
}


}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch12",
                             "Reformer LSH attention: hashing, chunks, rounds, cost",
                             [](const attn::Options& options, attn::Results& results) {
                                 const std::filesystem::path& out = options.out;
                                 std::mt19937_64 rng(options.seed);
                                 // ⟨Measure the collision probability against the angle⟩ 12-reformer.md:392
                                 const std::size_t collision_rounds = options.quick ? 1000 : 4000;
                                 const std::size_t model_samples = options.quick ? 20000 : 50000;
                                 const double pi = std::acos(-1.0);
                                 std::vector<attn::Series> collision_series;
                                 double worst_z = 0;  // largest |measured − theory| in standard errors
                                 for (std::size_t b : {2, 4, 8, 16}) {
                                     attn::Series measured{"b = " + std::to_string(b) + " measured", {}, {}, "points"};
                                     attn::Series theory{b == 2 ? "b = 2: 1 - θ/π"
                                                                : "b = " + std::to_string(b) + " model (Monte Carlo)",
                                                         {},
                                                         {},
                                                         "lines"};
                                     for (int degrees = 0; degrees <= 180; degrees += 10) {
                                         const double theta = degrees * pi / 180;
                                         const double p = measured_collision_rate(theta, 32, b, collision_rounds, rng);
                                         const auto [p_theory, p_error] =
                                             attn::collision_probability(theta, b, model_samples, rng());
                                         const double sigma = std::sqrt(
                                             p_theory * (1 - p_theory) / double(collision_rounds) + p_error * p_error);
                                         if (sigma > 0) worst_z = std::max(worst_z, std::abs(p - p_theory) / sigma);
                                         measured.x.push_back(degrees), measured.y.push_back(p);
                                         theory.x.push_back(degrees), theory.y.push_back(p_theory);
                                         if (b == 2 && degrees == 90) results.add("collision_b2_90", p);
                                         if (b == 16 && degrees == 60) results.add("collision_b16_60", p);
                                     }
                                     collision_series.push_back(theory);
                                     collision_series.push_back(measured);
                                 }
                                 results.add("collision_rounds", double(collision_rounds));
                                 results.add("collision_worst_z", worst_z, 2);
                                 draw_measured_on_theory(out / "collision.svg", collision_series);
                                 // ⟨Draw the pattern at small n⟩ 12-reformer.md:1019
                                 {
                                     const std::size_t n_small = 32, d_small = 16, b_small = 8, L_small = 4;
                                     std::vector<std::size_t> topic;
                                     const xt::xtensor<float, 2> QK_small =
                                         attn::tokens_in_topics(n_small, d_small, 8, 0.3, 6.0, rng, &topic);
                                     const std::uint64_t hash_seed = rng();
                                     // the tokens drawn topic by topic (by position within one), so blocks show
                                     std::vector<std::size_t> by_topic(n_small);
                                     std::iota(by_topic.begin(), by_topic.end(), std::size_t(0));
                                     std::stable_sort(by_topic.begin(), by_topic.end(),
                                                      [&](std::size_t i, std::size_t j) { return topic[i] < topic[j]; });
                                     std::vector<std::string> topics;  // in topic order
                                     for (std::size_t i : by_topic)
                                         topics.push_back(std::string(1, "ABCDEFGH"[topic[i]]));
                                     const std::vector<std::string> topic_labels = name_each_group(topics);
                                     const xt::xtensor<double, 2> dense = attn::shared_qk_weights(QK_small);
                                     const xt::xtensor<double, 2> lsh =
                                         attn::lsh_weights(QK_small, b_small, 1, L_small, hash_seed);
                                     const xt::xtensor<bool, 2> allowed =
                                         attn::lsh_pattern(QK_small, b_small, 1, L_small, hash_seed);
                                     attn::plot::HeatmapStyle dense_style{"", topic_labels, topic_labels};
                                     dense_style.allowed = xt::xtensor<bool, 2>(xt::ones<bool>({n_small, n_small}));
                                     for (std::size_t i = 0; i < n_small; ++i) dense_style.allowed(i, i) = false;
                                     attn::plot::heatmap(out / "dense_weights.svg", reorder(dense, by_topic),
                                                         dense_style);
                                     attn::plot::HeatmapStyle lsh_style{"", topic_labels, topic_labels};
                                     lsh_style.allowed = reorder(allowed, by_topic);
                                     attn::plot::heatmap(out / "lsh_weights.svg", reorder(lsh, by_topic), lsh_style);
                                     // ⟨Draw the same weights in sorted order⟩ 12-reformer.md:1076
                                     const xt::xtensor<std::size_t, 2> buckets =
                                         attn::lsh_buckets(QK_small, b_small, 1, hash_seed);  // 1×n
                                     const std::vector<std::size_t> order =
                                         attn::sort_by_bucket(buckets.data(), n_small, b_small);
                                     std::vector<std::string> sorted_buckets;  // in sorted order
                                     for (std::size_t i : order)
                                         sorted_buckets.push_back("b" + std::to_string(buckets(0, i)));
                                     const std::vector<std::string> bucket_labels = name_each_group(sorted_buckets);
                                     attn::plot::HeatmapStyle sorted_style{"", bucket_labels, bucket_labels};
                                     sorted_style.allowed = reorder(allowed, order);
                                     attn::plot::heatmap(out / "lsh_weights_sorted.svg", reorder(lsh, order), sorted_style);
                                     // ⟨Draw the pattern with several rounds⟩ 12-reformer.md:1102
                                     const xt::xtensor<double, 2> lsh_4 =
                                         attn::lsh_weights(QK_small, b_small, 4, L_small, hash_seed);
                                     attn::plot::HeatmapStyle rounds_style{"", topic_labels, topic_labels};
                                     rounds_style.allowed =
                                         reorder(attn::lsh_pattern(QK_small, b_small, 4, L_small, hash_seed), by_topic);
                                     attn::plot::heatmap(out / "lsh_weights_4_rounds.svg", reorder(lsh_4, by_topic),
                                                         rounds_style);
                                 }
                                 // ⟨Compare one chunk with dense attention⟩ 12-reformer.md:1127
                                 {
                                     const xt::xtensor<float, 2> QK_one =
                                         attn::tokens_in_topics(512, 64, 16, 0.3, 6.0, rng);
                                     const xt::xtensor<float, 2> V_one = attn::random_normal<float>(512, 64, 1.0, rng);
                                     const xt::xtensor<float, 2> O_lsh =
                                         attn::lsh_attention(QK_one, V_one, 8, 4, 512, rng());
                                     const xt::xtensor<float, 2> O_dense = attn::shared_qk_attention(QK_one, V_one);
                                     results.add("one_chunk_max_abs_error", xt::amax(xt::abs(O_lsh - O_dense))());
                                 }
                                 // ⟨Measure the error against the number of rounds⟩ 12-reformer.md:1148
                                 const std::size_t n_error = options.quick ? 512 : 1024, b_error = 32,
                                                   L_error = 2 * n_error / b_error;
                                 const int error_seeds = options.quick ? 3 : 10;
                                 const xt::xtensor<float, 2> QK_error =
                                     attn::tokens_in_topics(n_error, 64, 32, 0.3, 6.0, rng);
                                 const xt::xtensor<float, 2> V_error = attn::random_normal<float>(n_error, 64, 1.0, rng);
                                 // n×d_v
                                 const xt::xtensor<float, 2> O_dense = attn::shared_qk_attention(QK_error, V_error);
                                 const xt::xtensor<double, 2> dense_weights =
                                     attn::shared_qk_weights(xt::xtensor<double, 2>(QK_error));
                                 const double dense_norm = std::sqrt(double(xt::sum(O_dense * O_dense)()));
                                 attn::Series relative{"relative error ‖O − O_{dense}‖_F / ‖O_{dense}‖_F", {}, {}};
                                 attn::Series missed{"missed weight (dense weight outside the views)", {}, {}};
                                 attn::Series largest{"largest absolute error", {}, {}};
                                 for (std::size_t rounds : {1, 2, 4, 8}) {
                                     double relative_sum = 0, missed_sum = 0, largest_sum = 0;
                                     for (int s = 0; s < error_seeds; ++s) {
                                         const std::uint64_t hash_seed = options.seed + 1000 * std::uint64_t(s);
                                         const xt::xtensor<float, 2> O =
                                             attn::lsh_attention(QK_error, V_error, b_error, rounds, L_error, hash_seed);
                                         const xt::xtensor<float, 2> difference = O - O_dense;
                                         relative_sum +=
                                             std::sqrt(double(xt::sum(difference * difference)())) / dense_norm;
                                         largest_sum += double(xt::amax(xt::abs(difference))());
                                         missed_sum +=
                                             missed_weight(dense_weights, attn::lsh_pattern(QK_error, b_error, rounds,
                                                                                            L_error, hash_seed));
                                     }
                                     for (attn::Series* series : {&relative, &missed, &largest})
                                         series->x.push_back(double(rounds));
                                     relative.y.push_back(relative_sum / error_seeds);
                                     missed.y.push_back(missed_sum / error_seeds);
                                     largest.y.push_back(largest_sum / error_seeds);
                                     const std::string r = std::to_string(rounds);
                                     results.add("relative_error_rounds_" + r, relative.y.back());
                                     results.add("missed_weight_rounds_" + r, missed.y.back());
                                     results.add("max_abs_error_rounds_" + r, largest.y.back());
                                 }
                                 results.add("error_seeds", double(error_seeds));
                                 results.add_fit("relative_error_rounds_slope",
                                                 attn::loglog_fit(relative.x, relative.y));
                                 results.add_fit("missed_weight_rounds_slope", attn::loglog_fit(missed.x, missed.y));
                                 attn::plot::LinePlotStyle error_style{"", "hash rounds n_h", "error"};
                                 error_style.log_x = error_style.log_y = true;
                                 error_style.key = "bottom left";
                                 attn::plot::lines(out / "error_rounds.svg", {relative, largest, missed}, error_style);
                                 // ⟨Measure how full the buckets are⟩ 12-reformer.md:1478
                                 {
                                     const std::size_t n_b = 1024, b = 32, L = 2 * n_b / b;
                                     // n×64
                                     const xt::xtensor<float, 2> uniform = attn::random_normal<float>(n_b, 64, 1.0, rng);
                                     const xt::xtensor<float, 2> topics =
                                         attn::tokens_in_topics(n_b, 64, 32, 0.3, 6.0, rng);
                                     const std::uint64_t hash_seed = rng();
                                     const std::vector<double> size_uniform = bucket_sizes(uniform, b, hash_seed);
                                     const std::vector<double> size_topics = bucket_sizes(topics, b, hash_seed);
                                     results.add("overflow_uniform", fraction_in_overfull_buckets(size_uniform, L, n_b));
                                     results.add("overflow_topics", fraction_in_overfull_buckets(size_topics, L, n_b));
                                     results.add("largest_bucket_topics", size_topics.front());
                                     attn::Series uniform_series{"uniform directions", {}, size_uniform};
                                     attn::Series topic_series{"32 topics", {}, size_topics};
                                     attn::Series chunk_series{
                                         "chunk length L = 64", {}, std::vector<double>(b, double(L)), "lines"};
                                     attn::Series mean_series{"average n/b = 32",
                                                              {},
                                                              std::vector<double>(b, double(n_b) / double(b)),
                                                              "lines"};
                                     for (std::size_t rank = 1; rank <= b; ++rank)
                                         for (attn::Series* s :
                                              {&uniform_series, &topic_series, &chunk_series, &mean_series})
                                             s->x.push_back(double(rank));
                                     attn::plot::LinePlotStyle size_style{"", "bucket, by rank",
                                                                          "queries in the bucket"};
                                     size_style.key = "top right";
                                     attn::plot::lines(out / "bucket_sizes.svg",
                                                       {uniform_series, topic_series, chunk_series, mean_series},
                                                       size_style);
                                 }
                                 // ⟨Time LSH and dense attention against n⟩ 12-reformer.md:1268
                                 const std::size_t n_fit = options.quick ? 128 : options.bench ? 1024 : 512;
                                 const std::size_t n_hi = options.quick ? 2048 : options.bench ? 16384 : 8192;
                                 const std::size_t n_dense_hi = options.bench ? 4096 : 2048;
                                 const int repeats = options.quick ? 2 : 7;
                                 attn::CostCurve lsh{"LSH attention", 1}, dense{"dense shared-QK", 1};
                                 for (std::size_t n_cost = 128; n_cost <= n_hi; n_cost *= 2) {
                                     const xt::xtensor<float, 2> QK_n =
                                         attn::tokens_in_topics(n_cost, 64, 64, 0.3, 6.0, rng);
                                     const xt::xtensor<float, 2> V_n = attn::random_normal<float>(n_cost, 64, 1.0, rng);
                                     attn::Call dense_call;  // empty beyond n_dense_hi: no point there
                                     if (n_cost <= n_dense_hi)
                                         dense_call = [&] { return attn::shared_qk_attention(QK_n, V_n); };
                                     auto lsh_call = [&] {
                                         return attn::lsh_attention(QK_n, V_n, 32, 2, 64, options.seed);
                                     };
                                     attn::measure_costs({&lsh, &dense}, double(n_cost), {lsh_call, dense_call},
                                                         repeats);
                                 }
                                 // ⟨Fit the slopes and find the crossover⟩ 12-reformer.md:1295
                                 const attn::SlopeFit lsh_time_fit = lsh.time_fit(n_fit);
                                 const attn::SlopeFit dense_time_fit = dense.time_fit();
                                 const attn::SlopeFit lsh_memory_fit = lsh.memory_fit(n_fit);
                                 const attn::SlopeFit dense_memory_fit = dense.memory_fit();
                                 results.add_fit("lsh_time_slope", lsh_time_fit);
                                 results.add_fit("dense_time_slope", dense_time_fit);
                                 results.add_fit("lsh_memory_slope", lsh_memory_fit);
                                 results.add_fit("dense_memory_slope", dense_memory_fit);
                                 results.add("n_fit", double(n_fit));
                                 results.add("n_hi", double(n_hi));
                                 results.add("n_dense_hi", double(n_dense_hi));
                                 results.add("lsh_seconds_at_n_hi", lsh.wall_seconds.back());
                                 results.add("lsh_mib_at_n_hi", lsh.peak_mib.back());
                                 const double dense_matrix_bytes = double(n_hi * n_hi * sizeof(float));  // one n×n
                                 results.add("dense_matrix_mib_at_n_hi", dense_matrix_bytes / (1 << 20));
                                 const std::size_t at_dense_hi = dense.n.size() - 1;  // both curves start at n = 128
                                 results.add("lsh_seconds_at_n_dense_hi", lsh.wall_seconds[at_dense_hi]);
                                 results.add("dense_seconds_at_n_dense_hi", dense.wall_seconds.back());
                                 results.add("dense_mib_at_n_dense_hi", dense.peak_mib.back());
                                 results.add("lsh_mib_at_n_dense_hi", lsh.peak_mib[at_dense_hi]);
                                 results.add_text("time_crossover", attn::find_crossover(lsh, dense).describe());
                                 results.add_text("memory_crossover", attn::find_crossover(lsh, dense, true).describe());
                                 std::vector<attn::Series> times = {dense.time(), lsh.time()};  // dense: first colour
                                 // fitted from n = n_fit, said in the caption
                                 times[1].label += ", slope " + lsh_time_fit.text();
                                 times[0].label += ", slope " + dense_time_fit.text();
                                 attn::plot::LinePlotStyle time_style{"", "n (tokens)", "seconds"};
                                 time_style.log_x = time_style.log_y = true;
                                 attn::plot::leave_room_for_the_key(time_style, times);
                                 attn::plot::lines(out / "cost_time.svg", times, time_style);
                                 std::vector<attn::Series> memories = {dense.memory(), lsh.memory()};
                                 memories[1].label += ", slope " + lsh_memory_fit.text();
                                 memories[0].label += ", slope " + dense_memory_fit.text();
                                 attn::plot::LinePlotStyle memory_style{"", "n (tokens)", "MiB"};
                                 memory_style.log_x = memory_style.log_y = true;
                                 attn::plot::leave_room_for_the_key(memory_style, memories);
                                 attn::plot::lines(out / "cost_memory.svg", memories, memory_style);
                             });
}
