// Generated from chapters/03-multi-head-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 3: several heatmaps as the panels of one figure.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "attn/plot.hpp"

namespace attn::plot {

// ⟨Lay out a grid of heatmap panels⟩ 03-multi-head-attention.md:479
/// Where the panels of a heatmap grid go, in pixels of the drawing.
struct GridLayout {
    double panel_w = 0, panel_h = 0;     ///< one panel's plot area
    double left_first = 0, left_gap = 0; ///< left of column 0; between columns
    double top = 0, bottom = 0;          ///< above and below each panel
    double xlabel = 0, colour_bar = 0;   ///< under the last row; right of the grid
    bool rotate_x = false;               ///< key labels stand upright
    int width = 0, height = 0;           ///< the canvas
};

/// Characters of the longest label, or of the largest index when there are none.
inline std::size_t longest_label(const std::vector<std::string>& labels,
                                 std::size_t count)
{
    std::size_t longest = std::to_string(count).size();
    for (const std::string& label : labels) longest = std::max(longest, label.size());
    return longest;
}

/// @brief The layout of `count` panels of n×m matrices, `columns` per row, on a
/// canvas `width` pixels wide.
inline GridLayout grid_layout(const HeatmapStyle& style, std::size_t n, std::size_t m,
                              std::size_t count, std::size_t columns, int width)
{
    const double letter = 0.6 * font_size, line = 1.9 * font_size;  // in pixels
    GridLayout g;
    const double row_labels = letter * double(longest_label(style.row_labels, n));
    g.left_first = 2 * line + row_labels + 12;  // gnuplot's room for the y label
    g.left_gap = row_labels + 28;
    g.colour_bar = 5.5 * line;
    g.top = 1.6 * line;     // gnuplot sets a title well above its panel
    g.xlabel = 1.6 * line;
    const double gaps = double(columns - 1) * g.left_gap;
    g.panel_w = (width - g.colour_bar - g.left_first - gaps) / double(columns);
    g.panel_h = g.panel_w * double(n) / double(m);
    g.rotate_x = !labels_fit_level(style.col_labels, g.panel_w);
    g.bottom = 8 + (g.rotate_x ? letter * double(longest_label(style.col_labels, m))
                               : line);
    const std::size_t rows = (count + columns - 1) / columns;
    g.width = width;
    g.height = int(std::ceil(double(rows) * (g.top + g.panel_h + g.bottom) + g.xlabel));
    return g;
}

// ⟨Draw a grid of heatmaps⟩ 03-multi-head-attention.md:530
/// @brief One panel of a heatmap grid: its title and its matrix.
struct HeatmapPanel {
    std::string title;
    xt::xtensor<double, 2> values;  ///< n×m, the same shape in every panel
};

/// @brief Draw `panels` as one SVG figure, `columns` panels per row, sharing the
/// axis names, token labels and colour scale of `style` (one colour bar, on the
/// right); writes `path`.tsv with lines "panel row col value", panels from 0.
/// @param width the canvas's width in pixels
inline void heatmap_grid(const std::filesystem::path& path,
                         const std::vector<HeatmapPanel>& panels,
                         const HeatmapStyle& style, std::size_t columns,
                         int width = 960)
{
    if (panels.empty() || columns == 0)
        throw std::invalid_argument("heatmap_grid: need a panel and a column");
    if (style.allowed.size() != 0)
        throw std::invalid_argument("heatmap_grid: masked cells are not drawn here");
    const std::size_t n = panels[0].values.shape(0), m = panels[0].values.shape(1);
    for (const HeatmapPanel& panel : panels)
        if (panel.values.shape(0) != n || panel.values.shape(1) != m)
            throw std::invalid_argument("heatmap_grid: the panels differ in shape");
    {
        std::ofstream data(data_path(path));
        data << "# panel\trow\tcol\tvalue\n" << std::setprecision(9);
        for (std::size_t p = 0; p < panels.size(); ++p)
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j < m; ++j)
                    data << p << '\t' << i << '\t' << j << '\t'
                         << panels[p].values(i, j) << '\n';
    }
    columns = std::min(columns, panels.size());
    const GridLayout g = grid_layout(style, n, m, panels.size(), columns, width);
    Figure figure(path, svg_terminal(g.width, g.height));
    set_heatmap_axes(figure, style, n, m);
    if (!style.probabilities) {  // one colour scale for every panel: all their values
        double low = panels[0].values(0, 0), high = low;
        for (const HeatmapPanel& panel : panels)
            for (double value : panel.values)
                low = std::min(low, value), high = std::max(high, value);
        if (high == low) high = low + 1;
        figure << "set cbrange [" << low << ":" << high << "]\n";
    }
    figure << "set xtics " << tic_labels(style.col_labels, m)
           << (g.rotate_x ? " rotate by 90 right" : " norotate") << "\n"
           << "unset key\nset size noratio\nset multiplot\n";
    const std::size_t rows = (panels.size() + columns - 1) / columns;
    auto x = [&](double pixels) { return pixels / double(g.width); };
    auto y = [&](double from_top) { return 1 - from_top / double(g.height); };
    for (std::size_t p = 0; p < panels.size(); ++p) {
        const std::size_t r = p / columns, c = p % columns;
        const double left = g.left_first + double(c) * (g.panel_w + g.left_gap),
                     top = double(r) * (g.top + g.panel_h + g.bottom) + g.top;
        figure << "set lmargin at screen " << x(left) << "\nset rmargin at screen "
               << x(left + g.panel_w) << "\nset tmargin at screen " << y(top)
               << "\nset bmargin at screen " << y(top + g.panel_h) << "\n"
               << "set title " << quote(panels[p].title) << "\nset ylabel "
               << quote(c == 0 ? style.y_label : "") << "\nset xlabel "
               << quote(r + 1 == rows ? style.x_label : "") << "\n";
        if (p + 1 == panels.size())  // one colour bar, from the top row to the bottom
            figure << "set colorbox user origin screen "
                   << x(g.width - g.colour_bar + 16) << ", screen "
                   << y(double(rows) * (g.top + g.panel_h + g.bottom) - g.bottom)
                   << " size screen " << x(20) << ", screen "
                   << y(g.top) - y(double(rows) * (g.top + g.panel_h + g.bottom) -
                                   g.bottom)
                   << "\n";
        else
            figure << "unset colorbox\n";
        figure << "plot '-' using 1:2:3 with image pixels notitle\n";
        std::vector<std::tuple<double, double, double>> cells;
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < m; ++j)
                cells.emplace_back(double(j), double(i), panels[p].values(i, j));
        figure.send(cells);
    }
    figure << "unset multiplot\n";
}

// ⟨Read the text a figure shows⟩ 03-multi-head-attention.md:617
/// @brief Every piece of text the SVG figure `svg` shows, in drawing order: the
/// characters of each `<text>` element, tags dropped, XML entities decoded.
inline std::vector<std::string> svg_texts(const std::filesystem::path& svg)
{
    std::ifstream in(svg);
    if (!in) throw std::runtime_error("cannot read " + svg.string());
    const std::string xml{std::istreambuf_iterator<char>(in), {}};
    const std::vector<std::pair<std::string, std::string>> entities = {
        {"&lt;", "<"},     {"&gt;", ">"}, {"&quot;", "\""},
        {"&apos;", "'"}, {"&amp;", "&"}};  // &amp; last: "&amp;lt;" reads "&lt;"
    std::vector<std::string> texts;
    for (std::size_t at = xml.find("<text"); at != std::string::npos;
         at = xml.find("<text", at + 1)) {
        const std::size_t end = xml.find("</text>", at);
        std::string text;
        bool in_tag = false;
        for (std::size_t k = xml.find('>', at) + 1; k < end; ++k) {
            if (xml[k] == '<' || xml[k] == '>') in_tag = (xml[k] == '<');
            else if (!in_tag) text += xml[k];
        }
        for (const auto& [entity, character] : entities)
            for (std::size_t e = text.find(entity); e != std::string::npos;
                 e = text.find(entity, e + 1))
                text.replace(e, entity.size(), character);
        texts.push_back(text);
    }
    return texts;
}

}  // namespace attn::plot
