// Generated from chapters/00-instruments.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief What every chapter's program shares: options, results for the book, error
/// handling.

#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "attn/machine.hpp"

namespace attn {

// ⟨Parse the common options⟩ 00-instruments.md:1706
/// @brief The options every chapter's program accepts.
struct Options {
    std::filesystem::path out;  ///< where figures and results are written
    std::uint64_t seed = 20240611;
    bool quick = false;         ///< smaller experiments, for a fast check
    bool bench = false;         ///< the largest benchmarks
    std::filesystem::path
        model;  ///< a trained model to read (chapter 5 reads chapter 4's)
};

/// Thrown for a bad command line; the program prints usage and exits 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// @brief Parse argv; throws UsageError on anything it does not understand.
inline Options parse_options(int argc, char** argv, const std::string& chapter,
                             bool& help)
{
    Options options;
    options.out = "figures/" + chapter;
    help = false;
    for (int a = 1; a < argc; ++a) {
        const std::string arg = argv[a];
        auto value = [&]() -> std::string {
            if (a + 1 >= argc) throw UsageError(arg + " needs a value");
            return argv[++a];
        };
        if (arg == "--help" || arg == "-h") help = true;
        else if (arg == "--quick") options.quick = true;
        else if (arg == "--bench") options.bench = true;
        else if (arg == "--out") options.out = value();
        else if (arg == "--model") options.model = value();
        else if (arg == "--seed") {
            const std::string text = value();
            std::size_t used = 0;
            try {
                options.seed = std::stoull(text, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (used == 0 || used != text.size() || text[0] == '-')
                throw UsageError("--seed needs a non-negative integer, not '" + text +
                                 "'");
        } else throw UsageError("unknown argument '" + arg + "'");
    }
    return options;
}

// ⟨Collect the numbers the book quotes⟩ 00-instruments.md:1760
/// A number as the book prints it: whole numbers in full, others with `digits`
/// significant digits.
inline std::string format_number(double value, int digits = 3)
{
    std::ostringstream text;
    if (std::isfinite(value) && value == std::round(value) && std::abs(value) < 1e15)
        text << static_cast<long long>(value);
    else
        text << std::setprecision(digits) << value;
    return text.str();
}

/// @brief Named results of a run, printed and written to results.tsv for the book to
/// quote.
class Results {
public:
    void add(const std::string& key, double value, int digits = 3)
    {
        add_text(key, format_number(value, digits));
    }
    void add_text(const std::string& key, const std::string& text)
    {
        entries_.emplace_back(key, text);
    }
    /// A fitted slope (attn::SlopeFit) as three results: `key` (the slope),
    /// `key`_stderr (its standard error, to the same decimals) and `key`_points.
    template <class Fit>
    void add_fit(const std::string& key, const Fit& fit)
    {
        std::ostringstream slope, error;
        slope << std::fixed << std::setprecision(fit.decimals()) << fit.slope;
        error << std::fixed << std::setprecision(fit.decimals()) << fit.standard_error;
        add_text(key, slope.str());
        add_text(key + "_stderr", error.str());
        add(key + "_points", double(fit.points));
    }
    /// The machine the numbers were taken on, as results every chapter's page shows.
    void add_machine(const Machine& machine)
    {
        add_text("cpu_model", machine.cpu_model);
        add("cpu_cores", machine.cores);
        add_text("blas_core", machine.blas_core);
        add_text("blas_core_origin", machine.blas_core_origin);
        add("blas_threads", machine.blas_threads);
    }

    /// Print every result and write them to `dir`/results.tsv.
    void write(const std::filesystem::path& dir) const
    {
        std::ofstream out(dir / "results.tsv");
        for (const auto& [key, text] : entries_) {
            out << key << '\t' << text << '\n';
            std::cout << "  " << std::left << std::setw(40) << key << text << '\n';
        }
        if (!out)
            throw std::runtime_error("cannot write " + (dir / "results.tsv").string());
    }

private:
    std::vector<std::pair<std::string, std::string>> entries_;
};

// ⟨Run a chapter's program⟩ 00-instruments.md:1832
/// @brief The body of every chapter's main(): options, output folder, errors, results.
/// @param chapter short name, e.g. "ch01"; @param about one line saying what the
/// program does
/// @param body    the experiments: body(options, results)
/// @return the exit status: 0 on success, 1 on a failure, 2 on a bad command line
template <class Body>
int run_program(int argc, char** argv, const std::string& chapter,
                const std::string& about, Body&& body)
{
    select_blas_core();  // may run the program again, on the BLAS core the processor
                         // deserves
    const std::string name = std::filesystem::path(argv[0]).filename().string();
    const std::string usage =
        "usage: " + name +
        " [--out DIR] [--seed N] [--quick] [--bench] [--model FILE]"
        " [--help]";
    Options options;
    try {
        bool help = false;
        options = parse_options(argc, argv, chapter, help);
        if (help) {
            std::cout << usage << "\n" << about << "\n";
            return 0;
        }
    } catch (const UsageError& error) {
        std::cerr << name << ": " << error.what() << "\n" << usage << "\n";
        return 2;
    }
    try {
        std::filesystem::create_directories(options.out);
        std::cout << name << ": " << about << " (seed " << options.seed
                  << (options.quick ? ", quick" : "") << ")\n";
        const Machine machine = this_machine();
        std::cout << name << ": measured on " << machine.summary() << "\n";
        Results results;
        results.add_machine(machine);
        body(options, results);
        results.write(options.out);
        std::cout << name << ": wrote " << options.out.string() << "\n";
        return 0;
    } catch (const std::exception& error) {
        std::cerr << name << ": error: " << error.what() << "\n";
        return 1;
    }
}

}  // namespace attn
