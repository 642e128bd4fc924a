// Appendix "Instruments": the machine and its BLAS core, the timing protocol, peak memory,
// slopes with their standard error, cost curves, crossovers, figures and the program frame.
#define BOOST_TEST_MODULE ch00_instruments
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>
#include <xtensor/xtensor.hpp>

#include "attn/machine.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "test_support.hpp"

namespace {

/// A fresh temporary folder for one test, removed by the caller.
std::filesystem::path temporary_folder(const std::string& name)
{
    const auto dir = std::filesystem::temp_directory_path() /
                     ("attn-" + name + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

/// The key → value pairs of a results.tsv.
std::map<std::string, std::string> read_results(const std::filesystem::path& path)
{
    std::map<std::string, std::string> values;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
        const auto tab = line.find('\t');
        if (tab != std::string::npos) values[line.substr(0, tab)] = line.substr(tab + 1);
    }
    return values;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(machine)

BOOST_AUTO_TEST_CASE(blas_runs_a_core_as_wide_as_the_processor_unless_set_by_hand)
{
    // The test runner selected the core as every program does (test_support's fixture).
    const attn::Machine machine = attn::this_machine();
    BOOST_TEST_MESSAGE("measured on " << machine.summary());
    if (machine.blas_core_origin.rfind("set by hand", 0) == 0) return;
    BOOST_TEST(attn::blas_core_vector_level(machine.blas_core) >= std::min(machine.vector_level, 2),
               "OpenBLAS runs " << machine.blas_core << " on a processor of vector level "
                                << machine.vector_level);
}

BOOST_AUTO_TEST_CASE(a_generic_core_on_an_avx2_processor_is_replaced)
{
    const int level = attn::processor_vector_level();
    if (level == 0) return;
    BOOST_TEST(attn::better_blas_core("Prescott") == (level == 2 ? "SkylakeX" : "Haswell"));
    BOOST_TEST(attn::better_blas_core("Sandybridge") != "");
    BOOST_TEST(attn::better_blas_core("SkylakeX") == "");
    BOOST_TEST(attn::blas_core_vector_level("Zen") == 1);
    BOOST_TEST(attn::blas_core_vector_level("Prescott") == 0);
}

BOOST_AUTO_TEST_CASE(the_program_selects_the_core_and_a_hand_set_value_is_kept)
{
    const auto dir = temporary_folder("core");
    const std::string program = std::string(BUILD_DIR) + "/bin/ch00_instruments";
    BOOST_REQUIRE_MESSAGE(std::filesystem::exists(program), "build " << program << " first");
    auto run = [&](const std::string& environment) {
        const std::string command = environment + " " + program + " --quick --out " +
                                    (dir / "out").string() + " > " + (dir / "log").string();
        BOOST_REQUIRE(std::system(command.c_str()) == 0);
        return read_results(dir / "out" / "results.tsv");
    };
    // A value this machine's environment set on purpose is never removed, not even here.
    const bool preset = std::getenv("OPENBLAS_CORETYPE") && !std::getenv("ATTN_BLAS_CORE_DETECTED");
    auto chosen = run(preset ? "env" : "env -u OPENBLAS_CORETYPE -u ATTN_BLAS_CORE_DETECTED");
    if (!preset) {
        BOOST_TEST(attn::better_blas_core(chosen["blas_core"]) == "");
        BOOST_TEST(chosen["blas_core_origin"].rfind("set by hand", 0) != 0);
    }
    auto by_hand = run("env OPENBLAS_CORETYPE=Prescott");
    BOOST_TEST(by_hand["blas_core"] == "Prescott");
    BOOST_TEST(by_hand["blas_core_origin"] == "set by hand in OPENBLAS_CORETYPE");
    for (const char* key : {"cpu_model", "cpu_cores", "blas_threads", "l2_kib", "sgemm_gflops_1_thread"})
        BOOST_TEST(chosen.count(key) == 1u, "results.tsv lacks " << key);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(caches_are_read_from_the_kernel)
{
    if (!std::filesystem::exists("/sys/devices/system/cpu/cpu0/cache")) return;
    BOOST_TEST(attn::cache_bytes(1) >= 8u * 1024);
    BOOST_TEST(attn::cache_bytes(2) >= attn::cache_bytes(1));
}

BOOST_AUTO_TEST_CASE(blas_threads_are_set_for_a_scope_and_restored)
{
    const int before = attn::blas_threads();
    {
        const attn::BlasThreads one(1);
        BOOST_TEST(attn::blas_threads() == 1);
    }
    BOOST_TEST(attn::blas_threads() == before);
    BOOST_CHECK_THROW(attn::BlasThreads(0), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(timing)

BOOST_AUTO_TEST_CASE(calls_are_warmed_up_then_timed_in_alternating_rounds)
{
    std::string order;
    const auto timings = attn::time_alternating(
        {[&] { order += 'a'; return 0; }, attn::Call(), [&] { order += 'b'; return 0; }}, 3);
    BOOST_TEST(order == "ab" "ab" "ba" "ba");  // a warm-up of each; rounds start at a, -, b
    BOOST_TEST(timings.size() == 3u);
    BOOST_TEST(timings[0].walls.size() == 3u);
    BOOST_TEST(timings[1].walls.empty());  // the empty call is skipped
    for (double wall : timings[2].walls) BOOST_TEST(timings[2].wall <= wall);
    BOOST_CHECK_THROW(attn::time_alternating({[] { return 0; }}, 0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(processor_time_counts_work_and_not_sleep)
{
    const attn::Timing sleeping = attn::time_call([] { return ::usleep(20000); }, 2);
    BOOST_TEST(sleeping.wall >= 0.019);
    BOOST_TEST(sleeping.cpu < 0.01);
}

BOOST_AUTO_TEST_CASE(a_threads_clock_counts_its_own_work_alone)
{
    // This thread works for 0.2 s of its own time while a second one sleeps.
    std::atomic<bool> done{false};
    double sleeper_seconds = -1;
    std::thread sleeper([&] {
        const double start = attn::thread_cpu_seconds();
        while (!done) ::usleep(1000);
        sleeper_seconds = attn::thread_cpu_seconds() - start;
    });
    const double start = attn::thread_cpu_seconds();
    while (attn::thread_cpu_seconds() - start < 0.2) {}
    done = true;
    sleeper.join();
    BOOST_TEST(sleeper_seconds >= 0.0);
    BOOST_TEST(sleeper_seconds < 0.05);
}

BOOST_AUTO_TEST_CASE(peak_memory_sees_a_large_allocation)
{
    const std::size_t bytes = attn::peak_memory_bytes([] {
        xt::xtensor<float, 2> big = xt::ones<float>({2048, 2048});  // 16 MiB, touched
        return big(5, 5);
    });
    BOOST_TEST(bytes >= std::size_t(15) << 20);
    BOOST_TEST(bytes < std::size_t(64) << 20);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(fits)

BOOST_AUTO_TEST_CASE(an_exact_power_law_has_its_slope_and_no_error)
{
    const std::vector<double> x = {1, 2, 4, 8, 16};
    std::vector<double> y;
    for (double v : x) y.push_back(3.0 * v * v);
    const attn::SlopeFit fit = attn::loglog_fit(x, y);
    BOOST_TEST(fit.slope == 2.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(fit.standard_error < 1e-12);
    BOOST_TEST(fit.points == 5u);
}

BOOST_AUTO_TEST_CASE(the_standard_error_matches_a_hand_computed_fit)
{
    // log2 x = 0, 1, 2; log2 y = 0, 1, 3: slope 1.5, residuals ±1/6 and −1/3 (in log2 units).
    const attn::SlopeFit fit = attn::loglog_fit({1, 2, 4}, {1, 2, 8});
    BOOST_TEST(fit.slope == 1.5, boost::test_tools::tolerance(1e-12));
    // se = sqrt((1/36 + 1/9 + 1/36) / 1 / 2) = sqrt(1/12), the same in any log base.
    BOOST_TEST(fit.standard_error == std::sqrt(1.0 / 12.0), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(fit.text() == "1.50 ± 0.29");
}

BOOST_AUTO_TEST_CASE(too_few_or_non_positive_points_are_rejected)
{
    BOOST_CHECK_THROW(attn::loglog_fit({1, 2}, {1, 4}), std::invalid_argument);
    BOOST_CHECK_THROW(attn::loglog_fit({1, 2, 4}, {1, 0, 4}), std::invalid_argument);
    BOOST_CHECK_THROW(attn::loglog_fit({2, 2, 2}, {1, 2, 4}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(a_fit_is_kept_with_its_standard_error)
{
    attn::Results results;
    results.add_fit("time_slope", attn::loglog_fit({1, 2, 4}, {1, 2, 8}));
    const auto dir = temporary_folder("fit");
    results.write(dir);
    auto values = read_results(dir / "results.tsv");
    BOOST_TEST(values["time_slope"] == "1.50");
    BOOST_TEST(values["time_slope_stderr"] == "0.29");
    BOOST_TEST(values["time_slope_points"] == "3");
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(cost_curves)

/// A curve of cost c·n^p at the given lengths (time and memory alike).
attn::CostCurve power_law(const std::string& label, double c, double p, std::vector<double> n)
{
    attn::CostCurve curve{label, 1};
    for (double x : n) {
        curve.n.push_back(x);
        curve.wall_seconds.push_back(c * std::pow(x, p));
        curve.cpu_seconds.push_back(c * std::pow(x, p));
        curve.peak_mib.push_back(c * std::pow(x, p));
    }
    return curve;
}

BOOST_AUTO_TEST_CASE(a_curve_is_fitted_over_five_lengths_or_more)
{
    const auto four = power_law("four", 1, 2, {1, 2, 4, 8});
    BOOST_CHECK_THROW(four.time_fit(), std::invalid_argument);
    const auto six = power_law("six", 1, 2, {1, 2, 4, 8, 16, 32});
    BOOST_TEST(six.time_fit().slope == 2.0, boost::test_tools::tolerance(1e-12));
    BOOST_CHECK_THROW(six.time_fit(4), std::invalid_argument);  // only 4, 8, 16, 32
    BOOST_TEST(six.time().label == "six (1 thread)");
}

BOOST_AUTO_TEST_CASE(any_series_is_fitted_from_a_length_on)
{
    // y = n² below n = 8 and y = n³ from it: the fit from 8 sees the cube alone.
    attn::Series series{"bent", {1, 2, 4, 8, 16, 32, 64, 128}, {}};
    for (double n : series.x) series.y.push_back(n < 8 ? n * n : n * n * n / 8);
    const attn::SlopeFit from_8 = attn::slope_from(series, 8);
    BOOST_TEST(from_8.slope == 3.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(from_8.points == 5u);
    BOOST_TEST(attn::slope_from(series).points == 8u);
    BOOST_CHECK_THROW(attn::slope_from(series, 16), std::invalid_argument);  // 4 lengths
}

BOOST_AUTO_TEST_CASE(crossovers_are_found_between_and_beyond_the_lengths_measured)
{
    const auto dense = power_law("dense", 1, 2, {64, 128, 256, 512});
    const auto linear = power_law("linear", 200, 1, {64, 128, 256, 512, 1024});
    const attn::Crossover between = attn::find_crossover(linear, dense);
    BOOST_TEST(between.how == "measured");
    BOOST_TEST(between.n == 200.0, boost::test_tools::tolerance(1e-9));  // n² = 200 n
    const auto dear = power_law("dear", 2000, 1, {64, 128, 256, 512});
    const attn::Crossover beyond = attn::find_crossover(dear, dense);
    BOOST_TEST(beyond.how == "extrapolated");
    BOOST_TEST(beyond.n == 2000.0, boost::test_tools::tolerance(1e-9));
    const auto cheap = power_law("cheap", 1e-3, 1, {64, 128, 256, 512});
    BOOST_TEST(attn::find_crossover(cheap, dense).how == "below smallest");
    BOOST_TEST(attn::find_crossover(dense, cheap).how == "never");
}

BOOST_AUTO_TEST_CASE(curves_on_different_threads_are_not_measured_together)
{
    attn::CostCurve one{"one", 1}, two{"two", 2};
    BOOST_CHECK_THROW(attn::measure_costs({&one, &two}, 8, {[] { return 0; }, [] { return 0; }}, 1),
                      std::invalid_argument);
    attn::CostCurve a{"a", 1}, b{"b", 1};
    attn::measure_costs({&a, &b}, 8, {[] { return std::vector<float>(1 << 20, 1.0f); },
                                      attn::Call()}, 2);
    BOOST_TEST(a.n.size() == 1u);
    BOOST_TEST(b.n.empty());
    BOOST_TEST(a.peak_mib[0] >= 3.5);
}

BOOST_AUTO_TEST_CASE(attention_flops_count_the_visible_pairs)
{
    BOOST_TEST(attn::attention_flops(4, 6, 8, 2) == 2.0 * 4 * 6 * 10);
    BOOST_TEST(attn::attention_flops(4, 4, 8, 2, true) == 2.0 * 10 * 10);  // 1+2+3+4 pairs
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(figures_and_programs)

BOOST_AUTO_TEST_CASE(bad_options_are_usage_errors)
{
    bool help = false;
    auto parse = [&](std::vector<const char*> args) {
        args.insert(args.begin(), "prog");
        return attn::parse_options(int(args.size()), const_cast<char**>(args.data()), "ch01", help);
    };
    BOOST_CHECK_THROW(parse({"--bogus"}), attn::UsageError);
    BOOST_CHECK_THROW(parse({"--seed"}), attn::UsageError);
    BOOST_CHECK_THROW(parse({"--seed", "12x"}), attn::UsageError);
    BOOST_CHECK_THROW(parse({"--seed", "-3"}), attn::UsageError);
    const auto options = parse({"--seed", "7", "--quick", "--out", "somewhere"});
    BOOST_TEST(options.seed == 7u);
    BOOST_TEST(options.quick);
    BOOST_TEST(options.out.string() == "somewhere");
    BOOST_TEST(parse({}).out.string() == "figures/ch01");
}

BOOST_AUTO_TEST_CASE(every_program_records_the_machine)
{
    const auto dir = temporary_folder("program");
    const std::string out = (dir / "out").string();
    std::vector<const char*> args = {"prog", "--out", out.c_str()};
    const int status = attn::run_program(int(args.size()), const_cast<char**>(args.data()), "chXX",
                                         "a test", [](const attn::Options&, attn::Results& r) {
                                             r.add("answer", 42);
                                         });
    BOOST_TEST(status == 0);
    auto values = read_results(dir / "out" / "results.tsv");
    BOOST_TEST(values["answer"] == "42");
    BOOST_TEST(values["blas_core"] == attn::blas_core());
    BOOST_TEST(!values["cpu_model"].empty());
    BOOST_TEST(std::stoi(values["cpu_cores"]) >= 1);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(figures_are_drawn_and_their_data_written)
{
    const auto dir = temporary_folder("plot");
    xt::xtensor<double, 2> weights = {{1.0, 0.0}, {0.25, 0.75}};
    attn::plot::HeatmapStyle style{"two tokens", {"a", "b"}, {"a", "b"}};
    style.allowed = xt::xtensor<bool, 2>{{true, false}, {true, true}};
    attn::plot::heatmap(dir / "w.svg", weights, style);
    std::ifstream svg(dir / "w.svg");
    const std::string text{std::istreambuf_iterator<char>(svg), {}};
    BOOST_TEST(text.find("<svg") != std::string::npos);
    BOOST_TEST(text.find("masked") != std::string::npos);
    BOOST_TEST(std::filesystem::exists(dir / "w.tsv"));

    attn::plot::heatmap_animation(dir / "a.gif", {weights, weights * 0.5, weights * 0.25},
                                  {"one", "two", "three"}, {"", {"a", "b"}, {"a", "b"}});
    std::ifstream gif(dir / "a.gif", std::ios::binary);
    char magic[6] = {};
    gif.read(magic, 6);
    BOOST_TEST(std::string(magic, 6) == "GIF89a");
    BOOST_CHECK_THROW(attn::plot::heatmap(dir / "bad.svg", weights, {"wrong labels", {"a"}, {"a", "b"}}),
                      std::invalid_argument);
    std::filesystem::remove_all(dir);
}

/// The stroke colour of the curve titled `title` in a gnuplot SVG ("rgb(  0,   0,   0)").
std::string stroke_of(const std::filesystem::path& svg, const std::string& title)
{
    std::ifstream in(svg);
    const std::string file{std::istreambuf_iterator<char>(in), {}};
    const std::size_t at = file.find("<title>" + title + "</title>");
    if (at == std::string::npos) return "no curve titled " + title;
    const std::size_t stroke = file.find("stroke='rgb(", at);
    return file.substr(stroke + 8, file.find(')', stroke) - stroke - 7);
}

BOOST_AUTO_TEST_CASE(dense_attention_has_its_own_style_and_the_others_share_the_rest)
{
    const std::vector<attn::Series> series = {{"kernel", {1, 2}, {1, 2}},
                                              {"Dense (1 thread)", {1, 2}, {2, 4}},
                                              {"denser", {1, 2}, {3, 5}},
                                              {"other", {1, 2}, {1, 3}}};
    const std::vector<int> styles = attn::plot::line_styles(series);
    BOOST_TEST(styles == (std::vector<int>{1, attn::plot::dense_line_style, attn::plot::dense_line_style, 2}),
               boost::test_tools::per_element());
    BOOST_TEST(!attn::plot::is_dense("a dense kernel"));
    std::vector<attn::Series> many;
    for (int s = 0; s < 9; ++s) many.push_back({"curve " + std::to_string(s), {1}, {1}});
    const std::vector<int> cycled = attn::plot::line_styles(many);
    BOOST_TEST(cycled[7] == 1);  // seven colours for the others, then again
    BOOST_TEST(std::count(cycled.begin(), cycled.end(), attn::plot::dense_line_style) == 0);

    const auto dir = temporary_folder("dense");
    attn::plot::LinePlotStyle style{"", "n (tokens)", "seconds"};
    attn::plot::lines(dir / "a.svg", {series[0], series[1]}, style);
    attn::plot::lines(dir / "b.svg", {series[1], series[3], series[0]}, style);
    BOOST_TEST(stroke_of(dir / "a.svg", "Dense (1 thread)") == "rgb(  0,   0,   0)");
    BOOST_TEST(stroke_of(dir / "b.svg", "Dense (1 thread)") == "rgb(  0,   0,   0)");
    BOOST_TEST(stroke_of(dir / "a.svg", "kernel") == stroke_of(dir / "b.svg", "other"));
    BOOST_TEST(stroke_of(dir / "a.svg", "kernel") != "rgb(  0,   0,   0)");
    BOOST_TEST(test_support::svg_says(dir / "a.svg", "n (tokens)"));
    BOOST_TEST(test_support::svg_says(dir / "a.svg", "seconds"));
    const auto data = test_support::figure_data(dir / "b.tsv");
    BOOST_TEST(data.header == "# series\tx\ty");
    BOOST_TEST(data.names == (std::vector<std::string>{"Dense (1 thread)", "other", "kernel"}),
               boost::test_tools::per_element());
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(no_colour_of_the_style_is_too_pale_on_white)
{
    std::ifstream in(attn::plot::style_file());
    for (std::string line; std::getline(in, line);) {
        const std::size_t at = line.find("set linetype");
        const std::size_t hash = line.find("rgb '#");
        if (at != 0 || hash == std::string::npos) continue;
        const unsigned rgb = std::stoul(line.substr(hash + 6, 6), nullptr, 16);
        const double r = (rgb >> 16) / 255.0, g = ((rgb >> 8) & 255) / 255.0, b = (rgb & 255) / 255.0;
        BOOST_TEST(0.2126 * r + 0.7152 * g + 0.0722 * b < 0.7, line);  // luminance: visible on white
    }
}

BOOST_AUTO_TEST_CASE(categorical_maps_get_a_discrete_key_and_grids_one_caption)
{
    const auto dir = temporary_folder("categories");
    const xt::xtensor<double, 2> heads = {{1, 0, 0}, {2, 3, 0}, {1, 2, 1}};
    attn::plot::HeatmapStyle style{"", {}, {}};
    style.probabilities = false;
    style.categories = {"head 1", "head 2", "both heads"};
    style.masked_label = "not attended";
    style.allowed = heads > 0.0;
    attn::plot::heatmap(dir / "c.svg", heads, style);
    for (const char* entry : {"head 1", "head 2", "both heads", "not attended", "key", "query"})
        BOOST_TEST(test_support::svg_says(dir / "c.svg", entry), "the figure lacks " << entry);
    BOOST_TEST(!test_support::svg_says(dir / "c.svg", "attention weight"));  // no colour bar
    style.categories.pop_back();
    BOOST_CHECK_THROW(attn::plot::heatmap(dir / "bad.svg", heads, style), std::invalid_argument);

    const xt::xtensor<double, 2> weights = {{1.0, 0.0}, {0.25, 0.75}};
    attn::plot::HeatmapStyle first{"first", {}, {}}, second{"second", {}, {}};
    second.diverging = true;
    second.colorbar_label = "difference";
    attn::plot::heatmap_grid(dir / "g.svg", {{weights, first}, {weights - 0.5, second}}, 2);
    BOOST_TEST(test_support::svg_says(dir / "g.svg", "first"));
    BOOST_TEST(test_support::svg_says(dir / "g.svg", "second"));
    BOOST_TEST(test_support::svg_says(dir / "g.svg", "difference"));
    BOOST_TEST(test_support::svg_says(dir / "g.svg", "-0.4"));  // a range centred on 0
    const auto data = test_support::figure_data(dir / "g.tsv");
    BOOST_TEST(data.header == "# panel\trow\tcol\tvalue");
    BOOST_TEST(data.names == (std::vector<std::string>{"first", "second"}), boost::test_tools::per_element());
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(tic_labels_stay_level_and_apart)
{
    std::vector<std::string> words;
    for (int j = 0; j < 40; ++j) words.push_back("token" + std::to_string(j));
    const std::string tics = attn::plot::column_tics(words, words.size(), 400);
    BOOST_TEST(tics.find("rotate") == std::string::npos);
    BOOST_TEST(tics.find("token1'") == std::string::npos);  // too many: every few kept
    BOOST_TEST(tics.find("token0'") != std::string::npos);
    const std::vector<std::string> few = {"the", "cat", "sat"};
    BOOST_TEST(attn::plot::column_tics(few, 3, 400).find("x2tics ('") == std::string::npos);
    const std::vector<std::string> sparse = {"A", "", "", "", "B", "", "", "", "C"};
    BOOST_TEST(attn::plot::labels_fit_level(sparse, 400));
    BOOST_TEST((attn::plot::every_nth(sparse, 1, 2) == std::vector<std::string>{"", "", "", "", "B", "", "", "", ""}));
}

BOOST_AUTO_TEST_CASE(numbers_are_formatted_as_the_book_prints_them)
{
    BOOST_TEST(attn::format_number(4096) == "4096");
    BOOST_TEST(attn::format_number(0.98456) == "0.985");
    BOOST_TEST(attn::format_number(2.38e-7) == "2.38e-07");
}

BOOST_AUTO_TEST_SUITE_END()
