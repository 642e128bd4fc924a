// Generated from chapters/05-visualizing-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 5: attention rollout and the
/// figures that show what a model attends to.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/plot.hpp"

namespace attn {

// ⟨Average the heads of a layer⟩ 05-visualizing-attention.md:410
/// @brief The mean of a layer's heads' weights, n×n (rows still sum to 1).
inline xt::xtensor<double, 2> average_heads(
    const std::vector<xt::xtensor<double, 2>>& heads)
{
    if (heads.empty()) throw std::invalid_argument("average_heads: no heads");
    xt::xtensor<double, 2> mean = xt::zeros<double>(heads[0].shape());
    for (const xt::xtensor<double, 2>& P : heads) mean += P / double(heads.size());
    return mean;
}

// ⟨Roll attention out across layers⟩ 05-visualizing-attention.md:422
/// @brief Attention rollout (Abnar & Zuidema 2020, §3): R
/// = Ã_L ⋯ Ã_1 with Ã_l = ½·A_l + ½·I, rows renormalised.
/// @param layer_weights each layer's attention
/// (heads averaged), first layer first, each n×n
/// @return R, n×n; row i is how much each input token
/// contributes to output position i (sums to 1)
inline xt::xtensor<double, 2> attention_rollout(
    const std::vector<xt::xtensor<double, 2>>& layer_weights)
{
    if (layer_weights.empty())
        throw std::invalid_argument("attention_rollout: no layers");
    const std::size_t n = layer_weights[0].shape(0);
    // n×n: before any layer, each position holds itself
    xt::xtensor<double, 2> R = xt::eye<double>(n);
    for (const xt::xtensor<double, 2>& A : layer_weights) {
        if (A.shape(0) != n || A.shape(1) != n)
            throw std::invalid_argument("attention_rollout: layers must be n×n");
        // the residual keeps half
        xt::xtensor<double, 2> mixed = 0.5 * A + 0.5 * xt::eye<double>(n);
        for (std::size_t i = 0; i < n; ++i) {
            const double total = xt::sum(xt::row(mixed, i))();
            xt::row(mixed, i) /= total;  // total ≥ ½, from the identity
        }
        R = xt::linalg::dot(mixed, R);
    }
    return R;
}

}  // namespace attn

namespace attn::plot {

// ⟨Read the data behind a grid of heatmaps⟩ 05-visualizing-attention.md:90
/// @brief Read the panels a heatmap grid wrote beside `figure` (its .tsv of
/// "panel row col value" lines, panel = its title). @return one matrix per panel,
/// in order
inline std::vector<xt::xtensor<double, 2>> read_panels_tsv(
    const std::filesystem::path& figure)
{
    std::ifstream in(data_path(figure));
    if (!in) throw std::runtime_error("cannot read " + data_path(figure).string());
    std::vector<std::tuple<std::size_t, std::size_t, std::size_t, double>> cells;
    std::vector<std::string> titles;  // the panels, in order of appearance
    std::size_t panels = 0, rows = 0, cols = 0;
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream fields(line);
        std::string title;
        std::getline(fields, title, '\t');
        const auto known = std::find(titles.begin(), titles.end(), title);
        const std::size_t p = std::size_t(known - titles.begin());
        if (known == titles.end()) titles.push_back(title);
        std::size_t i = 0, j = 0;
        double value = 0;
        if (!(fields >> i >> j >> value))
            throw std::runtime_error(data_path(figure).string() + ": bad line " + line);
        cells.emplace_back(p, i, j, value);
        panels = std::max(panels, p + 1);
        rows = std::max(rows, i + 1), cols = std::max(cols, j + 1);
    }
    std::vector<xt::xtensor<double, 2>> values(panels, xt::zeros<double>({rows, cols}));
    for (const auto& [p, i, j, value] : cells) values[p](i, j) = value;
    return values;
}

// ⟨Draw every head as one grid⟩ 05-visualizing-attention.md:48
/// @brief Draw every head of every layer as the panels of one figure `path`, a
/// row per layer and a column per head, panel titles "layer l, head h"; the data
/// go to `path`.tsv, panels numbered layer by layer, head by head.
/// @param maps   attention weights [layer][head], each n×n
/// @param labels the n tokens, labelling rows and columns
inline void head_grid(const std::filesystem::path& path,
                      const std::vector<std::vector<xt::xtensor<double, 2>>>& maps,
                      const std::vector<std::string>& labels)
{
    if (maps.empty() || maps[0].empty())
        throw std::invalid_argument("head_grid: no heads to draw");
    std::vector<Panel> panels;
    for (std::size_t l = 0; l < maps.size(); ++l)
        for (std::size_t h = 0; h < maps[l].size(); ++h)
            panels.push_back({maps[l][h],
                              {"layer " + std::to_string(l) + ", head " +
                                   std::to_string(h),
                               labels, labels}});
    heatmap_grid(path, panels, maps[0].size());
}

// ⟨Draw attention as lines between two columns of tokens⟩ 05-visualizing-attention.md:172
/// @brief Draw each layer's heads as lines from queries (left column) to keys
/// (right column), one panel per layer, side by side. Width and opacity grow
/// with the weight, the colour says the head (one key for all panels);
/// weights below `threshold` are not drawn. Writes `path` (SVG) and
/// `path`.tsv with lines "layer head query key weight" for every pair.
/// @param layers [layer][head], each n×n; @param labels the n tokens
/// @param titles one per layer
inline void word_to_word(const std::filesystem::path& path,
                         const std::vector<std::vector<xt::xtensor<double, 2>>>& layers,
                         const std::vector<std::string>& labels,
                         const std::vector<std::string>& titles,
                         double threshold = 0.02)
{
    const std::size_t n = labels.size();
    if (layers.empty() || titles.size() != layers.size())
        throw std::invalid_argument("word_to_word: need one title per layer");
    const std::vector<std::string> colours = {"0072b2", "d55e00", "009e73",
                                              "cc79a7", "e69f00", "56b4e9"};
    {
        std::ofstream data(data_path(path));
        data << "# layer\thead\tquery\tkey\tweight\n" << std::setprecision(9);
        for (std::size_t l = 0; l < layers.size(); ++l)
            for (std::size_t h = 0; h < layers[l].size(); ++h)
                for (std::size_t i = 0; i < n; ++i)
                    for (std::size_t j = 0; j < n; ++j)
                        data << l << '\t' << h << '\t' << i << '\t' << j << '\t'
                             << layers[l][h](i, j) << '\n';
    }
    Figure figure(path, svg_terminal(440 * int(layers.size()), 110 + 34 * int(n)));
    figure << "unset border\nunset tics\nunset grid\nset bmargin 3\n"
           << "set xrange [-0.45:1.45]\nset yrange [" << -double(n) + 0.3 << ":1.2]\n"
           << "set multiplot layout 1," << layers.size() << "\n";
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto& heads = layers[l];
        // ⟨Draw one layer's lines⟩ 05-visualizing-attention.md:216
        figure << "unset label\nset title " << quote(titles[l]) << "\n"
               << "set label 'query' at 0,0.8 right textcolor rgb '#606060'\n"
               << "set label 'key' at 1,0.8 left textcolor rgb '#606060'\n";
        for (std::size_t i = 0; i < n; ++i)
            figure << "set label " << quote(labels[i]) << " at -0.05," << -double(i)
                   << " right\n"
                   << "set label " << quote(labels[i]) << " at 1.05," << -double(i)
                   << " left\n";
        if (l + 1 == layers.size())
            figure << "set key at screen 0.5, screen 0.01 center bottom horizontal\n";
        else
            figure << "unset key\n";
        std::vector<std::vector<std::pair<double, double>>> segments;
        figure << "plot ";
        for (std::size_t h = 0; h < heads.size(); ++h) {
            const std::string colour = colours[h % colours.size()];
            figure << (h ? ", " : "") << "keyentry with lines linewidth 4 linecolor rgb '#"
                   << colour << "' title 'head " << h << "'";
            // heads side by side
            const double offset = 0.12 * (double(h) - 0.5 * double(heads.size() - 1));
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j < n; ++j) {
                    const double weight = heads[h](i, j);
                    if (weight < threshold) continue;
                    // gnuplot's #AARRGGBB: AA = 00 is opaque, ff transparent
                    char alpha[3];
                    std::snprintf(alpha, sizeof alpha, "%02x",
                                  unsigned(std::lround(255 * (1 - weight))));
                    figure << ", '-' with lines notitle linewidth " << 0.4 + 5 * weight
                           << " linecolor rgb '#" << alpha << colour << "'";
                    segments.push_back(
                        {{0.0, -double(i) + offset}, {1.0, -double(j) + offset}});
                }
        }
        figure << "\n";
        for (const auto& segment : segments) figure.send(segment);
    }
    figure << "unset multiplot\n";
}

// ⟨Draw an animation of heatmaps⟩ 05-visualizing-attention.md:287
/// @brief Draw one heatmap per frame into the animated GIF `path`,
/// `titles[f]` over frame f; the frames share axes, labels and
/// colour scale. Writes `path`.tsv with lines "frame row col value".
/// @param frames each n×m, all the same shape; @param
/// delay_cs time per frame in hundredths of a second
inline void animate_heatmaps(const std::filesystem::path& path,
                             const std::vector<xt::xtensor<double, 2>>& frames,
                             const std::vector<std::string>& titles,
                             const HeatmapStyle& style, int delay_cs)
{
    if (frames.empty() || frames.size() != titles.size())
        throw std::invalid_argument(
            "animate_heatmaps: need one title per frame and at least one frame");
    const std::size_t n = frames[0].shape(0), m = frames[0].shape(1);
    {
        std::ofstream data(data_path(path));
        data << "# frame\trow\tcol\tvalue\n" << std::setprecision(9);
        for (std::size_t f = 0; f < frames.size(); ++f) {
            if (frames[f].shape(0) != n || frames[f].shape(1) != m)
                throw std::invalid_argument("animate_heatmaps: frames differ in shape");
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j < m; ++j)
                    data << f << '\t' << i << '\t' << j << '\t' << frames[f](i, j)
                         << '\n';
        }
    }
    const std::filesystem::path log = path.string() + ".gnuplot-log";
    std::filesystem::remove(path);
    {
        Gnuplot gnuplot("gnuplot 2>" + shell_quote(log.string()));
        gnuplot << "load " << quote(style_file()) << "\nset terminal gif animate delay "
                << delay_cs
                << " loop 0 size 720,560 enhanced font 'DejaVu Sans,"
                << font_size << "' background rgb 'white'\n"
                << "set output " << quote(path.string()) << "\n"
                << "set xlabel " << quote(style.x_label) << "\nset ylabel "
                << quote(style.y_label) << "\n"
                << "set cblabel " << quote(style.colorbar_label) << "\n"
                << "set xrange [-0.5:" << m - 0.5 << "]\nset yrange [" << n - 0.5
                << ":-0.5]\n"
                << "set size ratio " << double(n) / double(m)
                << "\nunset grid\nunset key\nset tics scale 0\n"
                << "set xtics " << tic_labels(style.col_labels, m)
                << " rotate by 60 right\n"
                << "set ytics " << tic_labels(style.row_labels, n) << "\n";
        if (style.probabilities) gnuplot << "set cbrange [0:1]\n";
        for (std::size_t f = 0; f < frames.size(); ++f) {
            gnuplot << "set title " << quote(titles[f])
                    << "\nplot '-' using 1:2:3 with image pixels notitle\n";
            std::vector<std::tuple<double, double, double>> cells;
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j < m; ++j)
                    cells.emplace_back(double(j), double(i), frames[f](i, j));
            gnuplot.send1d(cells);
        }
        gnuplot << "set output\n";
    }  // closing the pipe waits for gnuplot to finish
    std::ifstream log_file(log);
    const std::string messages{std::istreambuf_iterator<char>(log_file), {}};
    std::filesystem::remove(log);
    const std::string expected =
        std::to_string(frames.size()) + " frames in animation sequence\n";
    if (messages != expected)
        throw std::runtime_error("gnuplot, drawing " + path.string() + ":\n" +
                                 messages);
    if (!std::filesystem::exists(path) || std::filesystem::file_size(path) == 0)
        throw std::runtime_error("gnuplot did not write " + path.string());
}

// ⟨Draw a gallery of attention patterns⟩ 05-visualizing-attention.md:594
/// @brief A named attention pattern: true where query i may attend key j.
struct Pattern {
    std::string name;
    xt::xtensor<bool, 2> allowed;  ///< n×n
};

/// The fraction of (query, key) pairs a pattern allows.
inline double pattern_density(const xt::xtensor<bool, 2>& allowed)
{
    return double(std::count(allowed.begin(), allowed.end(), true)) /
           double(allowed.size());
}

/// @brief Draw every pattern as a panel of one figure (up to 4 per row) into
/// the SVG `path`; writes `path`.tsv with lines "pattern row col allowed".
inline void pattern_gallery(const std::filesystem::path& path,
                            const std::vector<Pattern>& patterns)
{
    if (patterns.empty()) throw std::invalid_argument("pattern_gallery: no patterns");
    const std::size_t n = patterns[0].allowed.shape(0);
    const std::size_t cols = std::min<std::size_t>(4, patterns.size()),
                      rows = (patterns.size() + cols - 1) / cols;
    for (const Pattern& p : patterns)  // check everything before gnuplot starts
        if (p.allowed.shape(0) != n || p.allowed.shape(1) != n)
            throw std::invalid_argument("pattern_gallery: every pattern must be " +
                                        std::to_string(n) + "×" + std::to_string(n));
    {
        std::ofstream data(data_path(path));
        data << "# pattern\trow\tcol\tallowed\n";
        for (const Pattern& p : patterns)
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j < n; ++j)
                    data << p.name << '\t' << i << '\t' << j << '\t' << p.allowed(i, j)
                         << '\n';
    }
    Figure figure(path, svg_terminal(int(250 * cols), int(270 * rows)));
    figure << "set multiplot layout " << rows << "," << cols
           << "\nunset colorbox\nunset key\nunset grid\n"
           << "set palette defined (0 '#b9b9b9', 1 '#3b528b')\nset cbrange "
              "[0:1]\nunset xtics\nunset ytics\n"
           << "set size ratio 1\nset xrange [-0.5:" << n - 0.5 << "]\nset yrange ["
           << n - 0.5 << ":-0.5]\n"
           << "set title font ',10'\n";
    for (const Pattern& p : patterns) {
        std::ostringstream title;
        title << p.name << "\\n"
              << std::fixed << std::setprecision(1)
              << 100.0 * pattern_density(p.allowed) << "% of pairs";
        figure << "set title \"" << title.str()
               << "\"\nplot '-' using 1:2:3 with image pixels\n";
        std::vector<std::tuple<double, double, double>> cells;
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j)
                cells.emplace_back(double(j), double(i), p.allowed(i, j) ? 1.0 : 0.0);
        figure.send(cells);
    }
    figure << "unset multiplot\n";
}

}  // namespace attn::plot
