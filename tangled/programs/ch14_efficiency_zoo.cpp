// Generated from chapters/14-efficiency-zoo.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <malloc.h>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/long_range.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/zoo.hpp"

namespace {

// ⟨Write numbers for the tables⟩ 14-efficiency-zoo.md:1697
/// A number for a table: 3 significant digits, a power of ten (7.8×10⁻⁷) outside
/// [0.01, 10⁴), "0" for zero and "–" for NaN.
std::string scientific_cell(double x)
{
    if (std::isnan(x)) return "–";
    if (x == 0 || (std::abs(x) >= 0.01 && std::abs(x) < 1e4))
        return attn::format_number(x, 3);
    const int exponent = int(std::floor(std::log10(std::abs(x))));
    static const char* const superscript[] = {"⁰", "¹", "²", "³", "⁴",
                                              "⁵", "⁶", "⁷", "⁸", "⁹"};
    std::string power = exponent < 0 ? "⁻" : "";
    for (char digit : std::to_string(std::abs(exponent)))
        power += superscript[digit - '0'];
    return attn::format_number(x / std::pow(10.0, exponent), 2) + "×10" + power;
}

/// An accuracy as a percentage with one decimal, or "–" (not measured).
std::string percent_cell(double accuracy)
{
    return std::isnan(accuracy) ? "–" : attn::format_number(100 * accuracy, 3) + " %";
}

/// A plain number with three significant digits, or "–".
std::string number_cell(double x)
{
    return std::isnan(x) ? "–" : attn::format_number(x, 3);
}

/// A name without its chapter: "sliding window (ch. 6)" → "sliding window".
std::string short_name(const std::string& name)
{
    return name.substr(0, name.find(" (ch."));
}

/// A results key for a mechanism: "Performer, causal (ch. 11)" → "performer_causal".
std::string result_key(const std::string& name)
{
    std::string key;
    for (char c : short_name(name)) {
        if (std::isalnum(static_cast<unsigned char>(c)))
            key += char(std::tolower(static_cast<unsigned char>(c)));
        else if (!key.empty() && key.back() != '_')
            key += '_';
    }
    while (!key.empty() && key.back() == '_') key.pop_back();
    return key;
}

// ⟨Draw points with their names⟩ 14-efficiency-zoo.md:1754
/// One named point of a scatter figure.
struct LabelledPoint {
    std::string name;
    double x, y;
};

/// A range [low, high] around the values, widened by `margin` of its span (of its
/// logarithm when `log`).
std::pair<double, double> padded_range(std::vector<double> v, bool log, double margin)
{
    for (double& x : v) x = log ? std::log10(x) : x;
    const auto [low, high] = std::minmax_element(v.begin(), v.end());
    const double pad = margin * std::max(*high - *low, log ? 1.0 : 1e-9);
    const double a = *low - pad, b = *high + pad;
    return log ? std::make_pair(std::pow(10.0, a), std::pow(10.0, b))
               : std::make_pair(a, b);
}

/// Where each name goes, as offsets from its point in fractions of the plot area: the
/// first of eight places that keeps clear of every point, of the names placed before
/// it and of the plot's edges. `at`: the points in fractions of the plot area, which
/// is at least 540×380 pixels; a name of 13-pixel text is 7.8 pixels a letter.
/// Points drawn on the same spot share one name, "a, b".
std::vector<std::pair<double, double>> place_names(
    const std::vector<std::pair<double, double>>& at,
    const std::vector<std::string>& names)
{
    const double pixel_x = 1.0 / 540, pixel_y = 1.0 / 380, height = 16 * pixel_y;
    const double offsets[8][2] = {{1, 0},  {-1, 0}, {0, 1},  {0, -1},
                                  {1, 1},  {-1, 1}, {1, -1}, {-1, -1}};
    std::vector<std::array<double, 4>> boxes;  // x0, y0, x1, y1
    for (const auto& [x, y] : at)  // the points themselves, 16 pixels across
        boxes.push_back(
            {x - 8 * pixel_x, y - 8 * pixel_y, x + 8 * pixel_x, y + 8 * pixel_y});
    std::vector<std::pair<double, double>> placed;
    for (std::size_t p = 0; p < at.size(); ++p) {
        if (names[p].empty()) {  // no name, or already in an earlier point's
            placed.emplace_back(0, 0);
            continue;
        }
        const double w = 7.8 * pixel_x * double(names[p].size());
        const auto [x, y] = at[p];
        std::array<double, 4> chosen{};
        std::pair<double, double> offset{};
        for (const auto& o : offsets) {
            // right of its point a name starts 11 pixels away, left of it ends there
            const double x0 = o[0] > 0 ? x + 11 * pixel_x
                              : o[0] < 0 ? x - 11 * pixel_x - w : x - w / 2;
            const double y0 = y + o[1] * 17 * pixel_y - height / 2;
            const std::array<double, 4> box{x0, y0, x0 + w, y0 + height};
            bool clear = box[0] >= 0 && box[2] <= 1 && box[1] >= 0 && box[3] <= 1;
            for (const auto& other : boxes)
                clear = clear && (box[2] <= other[0] || other[2] <= box[0] ||
                                  box[3] <= other[1] || other[3] <= box[1]);
            if (clear || &o == &offsets[0])
                chosen = box, offset = {x0 - x, y0 + height / 2 - y};
            if (clear) break;
        }
        boxes.push_back(chosen);
        placed.push_back(offset);
    }
    return placed;
}

/// Draw groups of named points (each group one symbol, in the key below the plot),
/// every point's name beside it, and a dashed line at y = `chance` unless it is NaN.
void labelled_points(
    const std::filesystem::path& path,
    const std::vector<std::pair<std::string, std::vector<LabelledPoint>>>& groups,
    const attn::plot::LinePlotStyle& style, double chance = NAN)
{
    std::vector<attn::Series> series;
    std::vector<double> xs, ys;
    std::vector<std::string> names;
    for (const auto& [title, points] : groups) {
        attn::Series s{title, {}, {}, "points"};
        for (const LabelledPoint& p : points) {
            s.x.push_back(p.x), s.y.push_back(p.y);
            xs.push_back(p.x), ys.push_back(p.y), names.push_back(p.name);
        }
        series.push_back(s);
    }
    attn::plot::write_series_tsv(path, series);
    const auto [x_low, x_high] = padded_range(xs, style.log_x, 0.08);
    auto [y_low, y_high] = padded_range(ys, style.log_y, 0.08);
    if (!std::isnan(style.y_min)) y_low = style.y_min, y_high = style.y_max;
    auto fraction = [](double v, double low, double high, bool log) {
        return log ? std::log10(v / low) / std::log10(high / low)
                   : (v - low) / (high - low);
    };
    std::vector<std::pair<double, double>> at;
    for (std::size_t p = 0; p < xs.size(); ++p) {
        at.emplace_back(fraction(xs[p], x_low, x_high, style.log_x),
                        fraction(ys[p], y_low, y_high, style.log_y));
        for (std::size_t q = 0; q < p && !names[p].empty(); ++q)
            if (xs[q] == xs[p] && ys[q] == ys[p] && !names[q].empty())
                names[q] += ", " + names[p], names[p].clear();
    }
    const auto offsets = place_names(at, names);
    attn::plot::Figure figure(path, attn::plot::svg_terminal(720, 600));
    figure << "set xlabel " << attn::plot::quote(style.x_label) << "\nset ylabel "
           << attn::plot::quote(style.y_label) << "\nset key " << style.key
           << (style.key.find("below") != std::string::npos ? " height 1 nobox" : "")
           << "\n"
           << "set xrange [" << x_low << ":" << x_high << "]\nset yrange [" << y_low
           << ":" << y_high << "]\n";
    const bool decades = style.log_x && x_high / x_low > 1e3;  // else plain numbers
    if (style.log_x)
        figure << "set logscale x\nset format x '" << (decades ? "10^{%L}" : "%g")
               << "'\n";
    if (style.log_y) figure << "set logscale y\nset format y '%g'\n";
    for (std::size_t p = 0; p < names.size(); ++p)
        if (!names[p].empty())
            figure << "set label " << attn::plot::quote(names[p]) << " at " << xs[p]
                   << "," << ys[p] << " offset graph " << offsets[p].first
                   << ", graph " << offsets[p].second << " font ',13'\n";
    figure << "plot ";
    for (std::size_t s = 0; s < series.size(); ++s)
        figure << (s ? ", " : "") << "'-' using 1:2 with points linestyle " << s + 1
               << " pointsize 1.5 title " << attn::plot::quote(series[s].label);
    if (!std::isnan(chance))
        figure << ", " << chance
               << " with lines dashtype 2 lc rgb 'gray40' title 'chance'";
    figure << "\n";
    for (const attn::Series& s : series) {
        std::vector<std::pair<double, double>> points;
        for (std::size_t i = 0; i < s.x.size(); ++i)
            points.emplace_back(s.x[i], s.y[i]);
        figure.send(points);
    }
}

// ⟨Describe the parameters⟩ 14-efficiency-zoo.md:1916
/// The parameters in words, with the Reformer's bucket count at length n.
std::string describe(const attn::ZooParameters& p, std::size_t n)
{
    auto number = [](std::size_t x) { return attn::format_number(double(x)); };
    return "window " + number(p.window) + " (sliding window), stride " +
           number(p.stride) + " and " + number(p.summary) +
           " summary columns (Sparse Transformer), one-sided window " +
           number(p.one_sided) + " with token 0 global (Longformer), blocks of " +
           number(p.block) + " with " + number(p.random_blocks) +
           " random blocks (BigBird), k = " + number(p.projected) +
           " (Linformer), r = " + number(p.features) +
           " orthogonal random features (Performer), chunks of " + number(p.chunk) +
           ", b = n/32 buckets (" + number(attn::reformer_buckets(n)) + " at n = " +
           number(n) + ") and " + number(p.hash_rounds) + " hash rounds (Reformer)";
}

// ⟨Draw inputs in topics⟩ 14-efficiency-zoo.md:1528
/// Q, K, V of topic data: queries in topics, their unit rows as keys, N(0, 1) values.
attn::ZooInputs topic_inputs(std::size_t n, std::size_t d, std::mt19937_64& rng)
{
    const xt::xtensor<float, 2> QK = attn::tokens_in_topics(n, d, 32, 0.3, 6.0, rng);
    return {QK, attn::unit_keys(QK), attn::random_normal<float>(n, d, 1.0, rng)};
}

// ⟨Read the queries, keys and values of a trained model⟩ 14-efficiency-zoo.md:1539
/// Q, K, V of every head of the model's first layer on one fresh sequence of the task.
std::vector<attn::ZooInputs> model_inputs(const attn::TinyModel<float>& model, bool far,
                                          std::mt19937_64& rng)
{
    const attn::RecallExample example = attn::recall_example(model.shape.n, far, rng);
    const attn::AttentionLayerForward<float> f =
        attn::model_forward(model, example.tokens).layers[0];
    const std::size_t d_k = model.shape.d_model / model.shape.heads;
    std::vector<attn::ZooInputs> heads;
    for (std::size_t h = 0; h < model.shape.heads; ++h)
        heads.push_back({attn::head_columns(f.Q, h, d_k),
                         attn::head_columns(f.K, h, d_k),
                         attn::head_columns(f.V, h, d_k)});
    return heads;
}

// ⟨Measure every mechanism on structured inputs⟩ 14-efficiency-zoo.md:1563
/// Output error, missed mass and weight error of one mechanism, averaged over inputs.
struct Miss {
    double output_error = 0, missed_mass = 0, weight_error = 0;
};

/// The three measures over the last `rows` queries of each input (all: rows = n).
Miss measure_miss(const attn::Mechanism& mechanism,
                  const std::vector<attn::ZooInputs>& inputs, std::size_t rows)
{
    Miss miss;
    for (const attn::ZooInputs& in : inputs) {
        const std::size_t n = in.Q.shape(0);
        const std::size_t first = n - rows;  // the rows measured: first … n − 1
        const xt::xtensor<float, 2> Q =
            xt::view(in.Q, xt::range(first, n), xt::all());  // rows×d_k
        attn::Mask allowed = xt::ones<bool>({rows, n});  // rows×n
        if (mechanism.exact == attn::Exact::causal)
            allowed = xt::view(attn::causal_mask(n), xt::range(first, n), xt::all());
        const xt::xtensor<float, 2> exact = attn::attention_weights(Q, in.K, allowed);
        const xt::xtensor<float, 2> approx = mechanism.weights(Q, in.K);  // rows×n
        const xt::xtensor<float, 2> O = xt::linalg::dot(approx, in.V),       // n×d_v
            O_exact = xt::linalg::dot(exact, in.V);
        const attn::WeightMiss w = attn::weight_miss(approx, exact);
        miss.output_error += attn::relative_error(O, O_exact) / double(inputs.size());
        miss.missed_mass += w.missed_mass / double(inputs.size());
        miss.weight_error += w.weight_error / double(inputs.size());
    }
    return miss;
}

// ⟨Say which mechanisms train⟩ 14-efficiency-zoo.md:1304
/// While alive, freed memory stays with the process: training allocates and frees
/// n×n matrices by the thousand, and handing each back to the kernel (the measuring
/// protocol's setting, restored at the end) would double the training's time.
struct KeepFreedMemory {
    KeepFreedMemory()
    {
        mallopt(M_MMAP_THRESHOLD, 64 << 20);
        mallopt(M_TRIM_THRESHOLD, 256 << 20);
    }
    KeepFreedMemory(const KeepFreedMemory&) = delete;
    KeepFreedMemory& operator=(const KeepFreedMemory&) = delete;
    ~KeepFreedMemory()
    {
        mallopt(M_TRIM_THRESHOLD, 128 * 1024);  // glibc's default
        mallopt(M_MMAP_THRESHOLD, 128 * 1024);  // the measuring protocol's
        malloc_trim(0);
    }
};

/// The memory one training step (a batch) adds to the process, in MiB: a copy of the
/// model takes the step, so the model itself is unchanged.
double training_step_mib(const attn::TinyModel<float>& model, bool far,
                         const attn::WeightsOf& weights_of, attn::TrainingConfig config)
{
    config.steps = 1;
    attn::TinyModel<float> copy = model;
    std::mt19937_64 rng(0);
    return double(attn::peak_memory_bytes([&] {
               attn::train_recall(copy, far, weights_of, config, rng);
               return 0;
           })) /
           (1 << 20);
}

/// What one mechanism did on one task (NaN: not done).
struct TaskRun {
    bool far;
    std::size_t mechanism;
    double trained = NAN, swapped = NAN, train_seconds = NAN, train_mib = NAN;
};

/// Whether chapter 4's backward pass is the mechanism's: its weights are a softmax
/// over a set of keys (exact attention, the patterns, the Reformer's buckets).
bool trainable(const attn::Mechanism& mechanism)
{
    return mechanism.family == "exact" || mechanism.family == "pattern" ||
           mechanism.family == "hashing";
}

// ⟨Fit a curve over its five largest lengths⟩ 14-efficiency-zoo.md:603
/// The slope of time (or memory) over the curve's five largest lengths; none if fewer.
std::optional<attn::SlopeFit> fit_largest(const attn::CostCurve& curve, bool memory)
{
    const attn::Series s = memory ? curve.memory() : curve.time();
    if (s.x.size() < attn::min_cost_lengths) return std::nullopt;
    const double from = s.x[s.x.size() - attn::min_cost_lengths];
    return memory ? curve.memory_fit(from) : curve.time_fit(from);
}

/// A legend: the mechanism, its slope if fitted, and its last length if before n_max.
std::string legend(const std::string& name, const attn::Series& s,
                   const std::optional<attn::SlopeFit>& fit, double n_max)
{
    std::string label = short_name(name);
    if (fit) label += ", slope " + fit->text();
    if (!s.x.empty() && s.x.back() < n_max)
        label += ", to n = " + attn::format_number(s.x.back());
    return label;
}

/// The error of one mechanism against n, drawn no lower than 1e-8 (a log axis).
attn::Series error_series(const std::map<std::size_t, double>& error)
{
    attn::Series s{"", {}, {}};
    for (const auto& [n, value] : error)
        s.x.push_back(double(n)), s.y.push_back(std::max(value, 1e-8));
    return s;
}

// ⟨Look up a cost at one length⟩ 14-efficiency-zoo.md:780
/// The wall seconds (or peak MiB) of `curve` at length n; NaN if not measured there.
double cost_at(const attn::CostCurve& curve, std::size_t n, bool memory)
{
    for (std::size_t k = 0; k < curve.n.size(); ++k)
        if (curve.n[k] == double(n))
            return memory ? curve.peak_mib[k] : curve.wall_seconds[k];
    return NAN;
}

/// A ratio as a table cell, "2.5×", or "–" when either side is missing.
std::string ratio_cell(double numerator, double denominator)
{
    const double r = numerator / denominator;
    return std::isfinite(r) && r > 0 ? scientific_cell(r) + "×" : "–";
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch14",
                             "every mechanism of the book: cost, misses, long range",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        std::vector<attn::TinyModel<float>> dense_models;  // far, near
        // ⟨Train a model on each task with each mechanism⟩ 14-efficiency-zoo.md:1256
        const std::size_t n_task = options.quick ? 64 : 256;
        const attn::ZooParameters task_parameters = attn::short_sequence_parameters(n_task);
        const std::vector<attn::Mechanism> small_zoo = attn::zoo_mechanisms(task_parameters);
        attn::TrainingConfig config;
        config.steps = options.quick ? 60 : 500;
        config.batch = 4;
        const std::size_t test_sequences = options.quick ? 40 : 200;
        auto train = [&](bool far, std::size_t z) {
            TaskRun run{far, z};
            std::mt19937_64 task_rng(options.seed + far);  // the same for all
            attn::TinyModel<float> model = attn::recall_model(n_task, task_rng);
            const double start = attn::thread_cpu_seconds();
            attn::train_recall(model, far, small_zoo[z].weights, config, task_rng);
            run.train_seconds = attn::thread_cpu_seconds() - start;
            std::mt19937_64 test_rng(options.seed + 100 + far);
            run.trained = attn::recall_accuracy(model, far, small_zoo[z].weights,
                                                test_sequences, test_rng);
            return std::pair{run, model};
        };
        std::vector<std::future<std::pair<TaskRun, attn::TinyModel<float>>>> trainings;
        {
            // one BLAS thread across all: a training that ends would otherwise restore
            // more threads while the others still run
            const attn::BlasThreads one_thread(1);
            const KeepFreedMemory keep;
            for (const bool far : {true, false})
                for (std::size_t z = 0; z < small_zoo.size(); ++z)
                    if (trainable(small_zoo[z]) && small_zoo[z].name != "flash (ch. 13)")
                        trainings.push_back(std::async(std::launch::async, train, far, z));
            for (auto& training : trainings) training.wait();
        }
        std::vector<TaskRun> runs;
        for (const bool far : {true, false})
            for (std::size_t z = 0; z < small_zoo.size(); ++z) runs.push_back({far, z});
        for (auto& training : trainings) {
            auto [run, model] = training.get();
            run.train_mib = training_step_mib(model, run.far, small_zoo[run.mechanism].weights,
                                              config);  // alone
            if (run.mechanism == 0) dense_models.push_back(model);  // the baseline: far, near
            runs[(run.far ? 0 : small_zoo.size()) + run.mechanism] = run;
        }
        // ⟨Swap every mechanism into the dense model⟩ 14-efficiency-zoo.md:1360
        for (TaskRun& run : runs) {
            std::mt19937_64 test_rng(options.seed + 100 + run.far);
            run.swapped = attn::recall_accuracy(dense_models[run.far ? 0 : 1], run.far,
                                                small_zoo[run.mechanism].weights,
                                                test_sequences, test_rng);
        }
        // ⟨Write the tables of the long-range benchmark⟩ 14-efficiency-zoo.md:1369
        {
            auto runs_of = [&](std::size_t z) {
                std::array<const TaskRun*, 2> found{};  // far, near
                for (const TaskRun& run : runs)
                    if (run.mechanism == z) found[run.far ? 0 : 1] = &run;
                return found;
            };
            std::ofstream accuracy(out / "recall_accuracy.mdtable"),
                cost(out / "recall_cost.mdtable");
            accuracy << "| mechanism | trained, far | trained, near | in the dense model, far "
                        "| in the dense model, near |\n|:--|--:|--:|--:|--:|\n";
            cost << "| mechanism | training s, far | training s, near | MiB per step, far "
                    "| MiB per step, near |\n|:--|--:|--:|--:|--:|\n";
            for (std::size_t z = 0; z < small_zoo.size(); ++z) {
                const auto [far, near] = runs_of(z);
                accuracy << "| " << small_zoo[z].name << " | " << percent_cell(far->trained)
                         << " | " << percent_cell(near->trained) << " | "
                         << percent_cell(far->swapped) << " | " << percent_cell(near->swapped)
                         << " |\n";
                cost << "| " << small_zoo[z].name << " | " << number_cell(far->train_seconds)
                     << " | " << number_cell(near->train_seconds) << " | "
                     << number_cell(far->train_mib) << " | " << number_cell(near->train_mib)
                     << " |\n";
                for (const TaskRun* run : {far, near}) {
                    const std::string task = run->far ? "far" : "near",
                                      name = result_key(small_zoo[z].name);
                    results.add("accuracy_trained_" + task + "_" + name, run->trained);
                    results.add("accuracy_in_dense_model_" + task + "_" + name, run->swapped);
                    results.add("train_seconds_" + task + "_" + name, run->train_seconds);
                }
            }
        }
                // ⟨Compare the mechanisms on structured inputs⟩ 14-efficiency-zoo.md:1595
                std::vector<std::array<Miss, 3>> misses(small_zoo.size());  // topics, far, near
                {
                    std::mt19937_64 input_rng(options.seed + 200);
                    const std::array<std::vector<attn::ZooInputs>, 3> inputs = {
                        std::vector<attn::ZooInputs>{topic_inputs(n_task, 64, input_rng)},
                        model_inputs(dense_models[0], true, input_rng),
                        model_inputs(dense_models[1], false, input_rng)};
                    const std::array<std::string, 3> input_names = {"topics", "model_far",
                                                                    "model_near"};
                    std::ofstream errors(out / "structured_error.mdtable"),
                        weights(out / "structured_weights.mdtable");
                    errors << "| mechanism | topics | model, far | model, near |\n|:--|--:|--:|--:|\n";
                    weights << "| mechanism | missed, topics | missed, far | missed, near "
                               "| weight error, topics | weight error, far | weight error, near |\n"
                               "|:--|--:|--:|--:|--:|--:|--:|\n";
                    for (std::size_t z = 0; z < small_zoo.size(); ++z) {
                        errors << "| " << small_zoo[z].name;
                        weights << "| " << small_zoo[z].name;
                        for (std::size_t s = 0; s < 3; ++s) {
                            misses[z][s] = measure_miss(small_zoo[z], inputs[s], s == 0 ? n_task : 8);
                            errors << " | " << scientific_cell(misses[z][s].output_error);
                            results.add("missed_mass_" + input_names[s] + "_" +
                                            result_key(small_zoo[z].name),
                                        misses[z][s].missed_mass);
                        }
                        for (std::size_t s = 0; s < 3; ++s)
                            weights << " | " << scientific_cell(misses[z][s].missed_mass);
                        for (std::size_t s = 0; s < 3; ++s)
                            weights << " | " << scientific_cell(misses[z][s].weight_error);
                        errors << " |\n";
                        weights << " |\n";
                    }
                }
        // ⟨Draw accuracy against the weight error⟩ 14-efficiency-zoo.md:1631
        {
            std::vector<LabelledPoint> points;
            for (const TaskRun& run : runs)
                if (run.far)
                    points.push_back({short_name(small_zoo[run.mechanism].name),
                                      std::max(misses[run.mechanism][1].weight_error, 1e-4),
                                      run.swapped});
            attn::plot::LinePlotStyle style{"", "weight error on the far model's own attention",
                                            "accuracy in the dense model, far task"};
            style.log_x = true;
            style.y_min = 0, style.y_max = 1.08;
            style.key = "below horizontal";
            labelled_points(out / "accuracy_weight_error.svg", {{"far task", points}}, style,
                            0.125);
        }
        // ⟨Choose the lengths, the rounds and the threads⟩ 14-efficiency-zoo.md:482
        const std::size_t d = 64;
        const std::size_t n_min = options.quick ? 128 : 256;
        const std::size_t n_max = options.quick ? 2048 : 8192;
        const std::size_t dense_n_max = options.quick ? 2048 : 4096;
        const int threads = 1;  // every mechanism of the comparison
        const int all_threads = int(std::max(1u, std::thread::hardware_concurrency()));
        auto rounds = [](std::size_t n) { return n <= 1024 ? 5 : 3; };
        // ⟨Run the zoo at every length⟩ 14-efficiency-zoo.md:498
        const std::vector<attn::Mechanism> zoo = attn::zoo_mechanisms();
        const std::size_t dense = 0;  // zoo_mechanisms() lists dense attention first
        std::vector<attn::CostCurve> curves;                            // each, on 1 thread
        std::vector<std::map<std::size_t, double>> errors(zoo.size());  // each, by n
        std::vector<std::size_t> exact_ids;                             // the exact ones
        std::vector<attn::CostCurve> curves_all;                        // theirs, every core
        for (std::size_t z = 0; z < zoo.size(); ++z) {
            curves.emplace_back(zoo[z].name, threads);
            if (zoo[z].family != "exact") continue;
            exact_ids.push_back(z);
            curves_all.emplace_back(zoo[z].name, all_threads);
        }
        for (std::size_t n = n_min; n <= n_max; n *= 2) {
            const attn::ZooInputs inputs = topic_inputs(n, d, rng);  // Q, K: n×d_k; V: n×d_v
            // ⟨Compute the exact outputs at this length⟩ 14-efficiency-zoo.md:528
            xt::xtensor<float, 2> dense_full, dense_causal, exact_shared;  // each n×d_v
            const xt::xtensor<float, 2> exact_full =
                attn::flash_attention(inputs.Q, inputs.K, inputs.V);
            const xt::xtensor<float, 2> exact_causal =
                attn::flash_attention(inputs.Q, inputs.K, inputs.V, true);
            if (n <= dense_n_max) {
                dense_causal = attn::scaled_dot_product_attention(inputs.Q, inputs.K, inputs.V,
                                                                  attn::causal_mask(n));
                exact_shared = attn::shared_qk_attention(inputs.Q, inputs.V);
            }
            auto known = [](const xt::xtensor<float, 2>& O) { return O.size() ? &O : nullptr; };
            auto yardstick = [&](std::size_t z) -> const xt::xtensor<float, 2>* {
                const bool causal = zoo[z].exact == attn::Exact::causal;
                if (z == dense) return &exact_full;
                if (zoo[z].family == "exact") return known(causal ? dense_causal : dense_full);
                if (zoo[z].exact == attn::Exact::shared_qk) return known(exact_shared);
                return causal ? &exact_causal : &exact_full;
            };
            // ⟨Measure the error of every mechanism⟩ 14-efficiency-zoo.md:552
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                if (z == dense && n > dense_n_max) continue;  // dense attention stops here
                const xt::xtensor<float, 2> O = zoo[z].prepare(inputs, threads)();  // n×d_v
                if (z == dense) dense_full = O;
                if (const xt::xtensor<float, 2>* exact = yardstick(z))
                    errors[z][n] = attn::relative_error(O, *exact);
            }
            // ⟨Time every mechanism on one thread⟩ 14-efficiency-zoo.md:566
            {
                std::vector<attn::CostCurve*> timed;
                std::vector<attn::Call> calls;
                for (std::size_t z = 0; z < zoo.size(); ++z) {
                    timed.push_back(&curves[z]);
                    const bool skip = z == dense && n > dense_n_max;  // an empty call: no point
                    calls.push_back(skip ? attn::Call() : zoo[z].prepare(inputs, threads));
                }
                attn::measure_costs(timed, double(n), calls, rounds(n));
            }
            // ⟨Time the exact mechanisms on every core⟩ 14-efficiency-zoo.md:583
            if (all_threads > 1 && n <= dense_n_max) {
                std::vector<attn::CostCurve*> timed;
                std::vector<attn::Call> calls;
                for (std::size_t e = 0; e < exact_ids.size(); ++e) {
                    timed.push_back(&curves_all[e]);
                    calls.push_back(zoo[exact_ids[e]].prepare(inputs, unsigned(all_threads)));
                }
                attn::measure_costs(timed, double(n), calls, rounds(n));
            }
            std::cout << "  measured n = " << n << std::endl;
        }
        // ⟨Draw time, memory and error against n⟩ 14-efficiency-zoo.md:638
        for (int group = 0; group < 2; ++group) {
            const std::string file = group == 0 ? "patterns" : "approximations";
            std::vector<attn::Series> time_curves, memory_curves, error_curves;
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                const bool exact = zoo[z].family == "exact";
                if (!exact && (group == 0) != (zoo[z].family == "pattern")) continue;
                attn::Series t = curves[z].time(), m = curves[z].memory();
                t.label = legend(zoo[z].name, t, fit_largest(curves[z], false), double(n_max));
                m.label = legend(zoo[z].name, m, fit_largest(curves[z], true), double(n_max));
                time_curves.push_back(t), memory_curves.push_back(m);
                attn::Series e = error_series(errors[z]);
                e.label = legend(zoo[z].name, e, std::nullopt, double(n_max));
                if (!e.x.empty()) error_curves.push_back(e);  // empty only without a reference
            }
            attn::plot::LinePlotStyle time_style{"", "n (tokens)", "seconds (1 thread)"};
            time_style.log_x = time_style.log_y = true;
            time_style.key = "above";
            attn::plot::lines(out / ("time_" + file + ".svg"), time_curves, time_style);
            attn::plot::LinePlotStyle memory_style{"", "n (tokens)", "MiB"};
            memory_style.log_x = memory_style.log_y = true;
            memory_style.key = "above";
            attn::plot::lines(out / ("memory_" + file + ".svg"), memory_curves, memory_style);
            attn::plot::LinePlotStyle error_style{"", "n (tokens)",
                                                  "‖O − O_{exact}‖ / ‖O_{exact}‖"};
            error_style.log_x = error_style.log_y = true;
            error_style.key = "above";
            attn::plot::lines(out / ("error_" + file + ".svg"), error_curves, error_style);
        }
        // ⟨Write the table of slopes and crossovers⟩ 14-efficiency-zoo.md:733
        {
            std::ofstream slopes(out / "slopes.csv");
            slopes << "mechanism,family,lengths fitted,time slope,memory slope,"
                      "cheaper than dense in time,cheaper than dense in memory\n";
            auto slope = [](const std::optional<attn::SlopeFit>& fit) {
                return fit ? fit->text() : std::string("– (fewer than 5 lengths)");
            };
            auto overtakes = [&](std::size_t z, bool memory) -> std::string {
                if (z == dense) return "–";
                try {
                    return attn::find_crossover(curves[z], curves[dense], memory).describe();
                } catch (const std::invalid_argument&) {
                    return "– (fewer than 3 lengths shared with dense)";
                }
            };
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                const attn::CostCurve& c = curves[z];
                const std::size_t fitted = std::min(c.n.size(), attn::min_cost_lengths);
                const double from = c.n[c.n.size() - fitted];
                slopes << '"' << zoo[z].name << "\"," << zoo[z].family << ','
                       << attn::format_number(from) << "–" << attn::format_number(c.n.back())
                       << ",\"" << slope(fit_largest(c, false)) << "\",\""
                       << slope(fit_largest(c, true)) << "\",\"" << overtakes(z, false)
                       << "\",\"" << overtakes(z, true) << "\"\n";
            }
        }
        // ⟨Write the tables relative to dense attention⟩ 14-efficiency-zoo.md:798
        {
            std::ofstream cost(out / "relative_cost.mdtable"), error(out / "errors.mdtable");
            cost << "| mechanism | family | speed 1K | speed 2K | speed 4K | memory 1K "
                    "| memory 2K | memory 4K |\n|:--|:--|--:|--:|--:|--:|--:|--:|\n";
            error << "| mechanism | error 1K | error 2K | error 4K | error 8K |\n"
                     "|:--|--:|--:|--:|--:|\n";
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                cost << "| " << zoo[z].name << " | " << zoo[z].family;
                for (std::size_t n : {1024, 2048, 4096})
                    cost << " | " << ratio_cell(cost_at(curves[dense], n, false),
                                                cost_at(curves[z], n, false));
                for (std::size_t n : {1024, 2048, 4096})
                    cost << " | " << ratio_cell(cost_at(curves[z], n, true),
                                                cost_at(curves[dense], n, true));
                cost << " |\n";
                error << "| " << zoo[z].name;
                for (std::size_t n : {1024, 2048, 4096, 8192}) {
                    const auto e = errors[z].find(n);
                    error << " | " << scientific_cell(e != errors[z].end() ? e->second : NAN);
                }
                error << " |\n";
            }
        }
        // ⟨Draw speed against error⟩ 14-efficiency-zoo.md:845
        {
            const std::size_t n = dense_n_max;
            std::vector<LabelledPoint> points;
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                const double speed =
                    cost_at(curves[dense], n, false) / cost_at(curves[z], n, false);
                const auto e = errors[z].find(n);
                if (!std::isfinite(speed) || e == errors[z].end())
                    throw std::logic_error(zoo[z].name + " has no point at n = " +
                                           std::to_string(n));
                const double error = std::max(e->second, 1e-8);  // a floor for the logarithm
                points.push_back({short_name(zoo[z].name), error, speed});
            }
            attn::plot::LinePlotStyle style{"", "relative error on topic data",
                                            "speed relative to dense attention (1 thread)"};
            style.log_x = style.log_y = true;
            style.key = "off";
            labelled_points(out / "speed_error.svg", {{"", points}}, style);
            results.add("n_scatter", double(n));
        }
        // ⟨Write the table of the exact mechanisms on every core⟩ 14-efficiency-zoo.md:889
        {
            std::ofstream table(out / "all_threads.csv");
            table << "mechanism,threads,ms 1K,ms 2K,ms 4K,speed 1K,speed 2K,speed 4K\n";
            for (std::size_t e = 0; e < exact_ids.size(); ++e) {
                const attn::CostCurve& c = curves_all[e];
                table << '"' << zoo[exact_ids[e]].name << "\"," << c.threads;
                for (std::size_t n : {1024, 2048, 4096}) {
                    const double ms = 1e3 * cost_at(c, n, false);
                    table << ',' << (std::isfinite(ms) ? attn::format_number(ms, 3) : "–");
                }
                for (std::size_t n : {1024, 2048, 4096})
                    table << ',' << ratio_cell(cost_at(curves_all[0], n, false),
                                               cost_at(c, n, false));
                table << '\n';
            }
        }
        // ⟨Compare the tiled kernel with dense attention⟩ 14-efficiency-zoo.md:919
        auto versus_dense = [&](const attn::CostCurve& flash, const attn::CostCurve& baseline) {
            const double ratio = cost_at(baseline, dense_n_max, false) /
                                 cost_at(flash, dense_n_max, false);
            if (!std::isfinite(ratio)) return std::string("– (not measured)");
            if (ratio >= 1)
                return attn::format_number(ratio, 2) + " times as fast as dense attention";
            return "slower than dense attention (" + attn::format_number(1 / ratio, 2) +
                   " times as long)";
        };
        std::string flash_one, flash_all;
        for (std::size_t e = 0; e < exact_ids.size(); ++e)
            if (zoo[exact_ids[e]].name == "flash (ch. 13)") {
                flash_one = versus_dense(curves[exact_ids[e]], curves[dense]);
                flash_all = all_threads > 1 ? versus_dense(curves_all[e], curves_all[0])
                                            : "– (this machine has one core)";
            }
        results.add_text("flash_vs_dense", flash_one);
        results.add_text("flash_vs_dense_all_threads", flash_all);
        std::size_t fastest = 1;
        for (std::size_t z = 1; z < zoo.size(); ++z)
            if (cost_at(curves[z], n_max, false) < cost_at(curves[fastest], n_max, false))
                fastest = z;
        results.add_text("fastest_at_n_max", fastest < zoo.size() ? zoo[fastest].name : "–");
        // ⟨Draw accuracy against speed⟩ 14-efficiency-zoo.md:1410
        {
            std::vector<LabelledPoint> trained, swapped;
            for (const TaskRun& run : runs) {
                if (!run.far) continue;
                const std::size_t z = run.mechanism;
                const double speed = cost_at(curves[dense], dense_n_max, false) /
                                     cost_at(curves[z], dense_n_max, false);
                const std::string name = short_name(zoo[z].name);
                if (!std::isnan(run.trained)) trained.push_back({name, speed, run.trained});
                swapped.push_back({std::isnan(run.trained) ? name : "", speed, run.swapped});
            }
            attn::plot::LinePlotStyle style{
                "", "speed relative to dense attention at 4K (1 thread)",
                "accuracy on the far task"};
            style.log_x = true;
            style.y_min = 0, style.y_max = 1.08;
            style.key = "below horizontal";
            labelled_points(out / "recall_accuracy_speed.svg",
                            {{"trained with the mechanism", trained},
                             {"swapped into the dense model", swapped}},
                            style, 0.125);
        }
        // ⟨Record what was measured⟩ 14-efficiency-zoo.md:1893
        {
            std::string names;
            for (std::size_t z = 0; z < zoo.size(); ++z) names += (z ? ", " : "") + zoo[z].name;
            results.add_text("mechanisms", names);
            results.add("mechanism_count", double(zoo.size()));
            results.add("n_min", double(n_min));
            results.add("n_max", double(n_max));
            results.add("dense_n_max", double(dense_n_max));
            results.add("threads", threads);
            results.add("all_threads", all_threads);
            results.add_text("repeats", "5 up to n = 1024, 3 beyond");
            results.add_text("benchmark_parameters", describe(attn::ZooParameters{}, n_max));
            results.add_text("task_parameters", describe(task_parameters, n_task));
            results.add("n_task", double(n_task));
            results.add("train_steps", double(config.steps));
            results.add("train_batch", double(config.batch));
            results.add("test_sequences", double(test_sequences));
        }
    });
}
