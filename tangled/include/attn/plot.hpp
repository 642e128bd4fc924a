// Generated from chapters/00-instruments.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief The book's plotting layer: heatmaps, line plots and animations through
/// gnuplot-iostream.

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <gnuplot-iostream.h>
#include <xtensor/xmath.hpp>
#include <xtensor/xtensor.hpp>

namespace attn::plot {

// ⟨Format text for gnuplot⟩ 00-instruments.md:1511
/// A gnuplot string literal of `text` (single quotes; quotes doubled).
inline std::string quote(const std::string& text)
{
    std::string quoted = "'";
    for (char c : text) quoted += (c == '\'') ? std::string("''") : std::string(1, c);
    return quoted + "'";
}

/// `text` quoted for the shell (single quotes).
inline std::string shell_quote(const std::string& text)
{
    std::string quoted = "'";
    for (char c : text)
        quoted += (c == '\'') ? std::string("'\\''") : std::string(1, c);
    return quoted + "'";
}

/// gnuplot tic labels: ("the" 0, "cat" 1, ...), or plain numbers without labels.
inline std::string tic_labels(const std::vector<std::string>& labels, std::size_t count)
{
    if (labels.empty()) return count <= 16 ? "1" : "autofreq";
    if (labels.size() != count)
        throw std::invalid_argument("heatmap: need one label per row/column");
    std::string tics = "(";
    for (std::size_t i = 0; i < count; ++i)
        tics += (i ? ", " : "") + quote(labels[i]) + " " + std::to_string(i);
    return tics + ")";
}

/// The shared style file: $ATTN_STYLE_FILE if set, else the one the build names.
inline std::string style_file()
{
    if (const char* path = std::getenv("ATTN_STYLE_FILE")) return path;
#ifdef ATTN_STYLE_FILE
    return ATTN_STYLE_FILE;
#else
    return "figures/style.gp";
#endif
}

// ⟨Open gnuplot on one figure⟩ 00-instruments.md:1432
/// Text size in the figures, in pixels of the drawing: figures are 640 pixels wide
/// and shown at 450–740, so text lands at 11 pixels or more on the page.
constexpr int font_size = 16;

/// The gnuplot terminal of the book's still figures: SVG, white background.
inline std::string svg_terminal(int width = 640, int height = 520)
{
    return "set terminal svg size " + std::to_string(width) + "," +
           std::to_string(height) + " dynamic enhanced font 'DejaVu Sans," +
           std::to_string(font_size) + "' background rgb 'white'";
}

/// @brief One gnuplot process drawing one file with the book's style.
/// gnuplot's messages go to a log beside the figure; any message at all (an error or a
/// warning) makes the figure fail, so a figure is either right or loudly missing.
/// If the code drawing it throws, the half-drawn file is removed and the error goes on.
class Figure {
public:
    explicit Figure(std::filesystem::path path,
                    const std::string& terminal = svg_terminal())
        : path_(std::move(path)), log_(path_.string() + ".gnuplot-log"),
          gnuplot_(std::make_unique<Gnuplot>("gnuplot 2>" + shell_quote(log_.string())))
    {
        std::filesystem::remove(path_);
        *gnuplot_ << "load " << quote(style_file()) << "\n"
                  << terminal << "\nset output " << quote(path_.string()) << "\n";
    }
    Figure(const Figure&) = delete;
    Figure& operator=(const Figure&) = delete;
    /// Closes gnuplot and checks that it wrote the file and said nothing.
    ~Figure() noexcept(false)
    {
        *gnuplot_ << "set output\n";
        gnuplot_.reset();  // flushes and waits for gnuplot to finish
        const std::string messages = read_messages(log_);
        std::filesystem::remove(log_);
        // An error while drawing: drop the figure, and let that error go on.
        if (std::uncaught_exceptions() > unwinding_) {
            std::filesystem::remove(path_);
            return;
        }
        if (!messages.empty())
            throw std::runtime_error("gnuplot, drawing " + path_.string() + ":\n" +
                                     messages);
        if (!std::filesystem::exists(path_) || std::filesystem::file_size(path_) == 0)
            throw std::runtime_error("gnuplot did not write " + path_.string());
    }
    template <class V>
    Figure& operator<<(const V& value)
    {
        *gnuplot_ << value;
        return *this;
    }
    /// Send one inline data block ('-') to gnuplot.
    template <class Points>
    void send(const Points& points) { gnuplot_->send1d(points); }

private:
    /// gnuplot's messages, less the line it always prints when closing an animation.
    static std::string read_messages(const std::filesystem::path& log)
    {
        std::ifstream in(log);
        std::string messages;
        for (std::string line; std::getline(in, line);)
            if (line.find("frames in animation sequence") == std::string::npos)
                messages += line + "\n";
        return messages;
    }

    std::filesystem::path path_, log_;
    std::unique_ptr<Gnuplot> gnuplot_;
    int unwinding_ = std::uncaught_exceptions();
};

// ⟨Describe a heatmap⟩ 00-instruments.md:877
/// @brief How to draw a matrix as a heatmap: rows are queries (top down), columns keys.
struct HeatmapStyle {
    std::string title;                    ///< what is plotted
    std::vector<std::string> row_labels;  ///< one per row (tokens), or empty: numbers
    std::vector<std::string> col_labels;  ///< one per column, or empty for numbers
    std::string x_label = "key";
    std::string y_label = "query";
    bool probabilities = true;  ///< colours on [0, 1]; else fitted to the data
    std::string colorbar_label = "attention weight";
    xt::xtensor<bool, 2> allowed = {};    ///< optional: false cells are drawn as masked
    /// Not probabilities: colours on [0, colour_max] when set, else fitted to the data.
    double colour_max = NAN;
    /// Signed differences: a diverging palette, white at 0, on a range symmetric
    /// about 0.
    bool diverging = false;
    /// A categorical map: value k = 1, 2, … is categories[k − 1], drawn in linetype k's
    /// colour and named in a discrete key (no colour bar).
    std::vector<std::string> categories = {};
    std::string masked_label = "masked";  ///< the key's name for masked cells
};

/// @brief One panel of a grid figure: a matrix and how to draw it.
struct Panel {
    xt::xtensor<double, 2> values;
    HeatmapStyle style;
};

/// A copy of `style` titled `title`: for panels that differ only in their titles.
inline HeatmapStyle titled(HeatmapStyle style, const std::string& title)
{
    style.title = title;
    return style;
}

// ⟨Describe a line plot⟩ 00-instruments.md:1321
/// @brief One named curve of a line plot.
struct Series {
    std::string label;
    std::vector<double> x, y;
    std::string with = "linespoints";  ///< gnuplot's plotting style
};

/// @brief Titles and axes of a line plot.
struct LinePlotStyle {
    std::string title, x_label, y_label;
    bool log_x = false, log_y = false;
    double y_min = NAN, y_max = NAN;  ///< fixed y range when both are set
    std::string key = "below left Left reverse vertical maxrows 4";  ///< off the data
};

// ⟨Write the data behind a figure⟩ 00-instruments.md:1553
/// The .tsv beside a figure: same name, extension replaced.
inline std::filesystem::path data_path(std::filesystem::path figure)
{
    return figure.replace_extension(".tsv");
}

/// Write a matrix as "row col value" lines; masked cells have value "masked".
inline void write_matrix_tsv(const std::filesystem::path& figure,
                             const xt::xtensor<double, 2>& values,
                             const xt::xtensor<bool, 2>* allowed)
{
    std::ofstream out(data_path(figure));
    out << "# row\tcol\tvalue\n" << std::setprecision(9);
    for (std::size_t i = 0; i < values.shape(0); ++i)
        for (std::size_t j = 0; j < values.shape(1); ++j) {
            out << i << '\t' << j << '\t';
            if (allowed && !(*allowed)(i, j)) out << "masked\n";
            else out << values(i, j) << '\n';
        }
}

/// Write the panels of a grid as "panel row col value" lines, panel = its title.
inline void write_panels_tsv(const std::filesystem::path& figure,
                             const std::vector<Panel>& panels)
{
    std::ofstream out(data_path(figure));
    out << "# panel\trow\tcol\tvalue\n" << std::setprecision(9);
    for (const Panel& panel : panels)
        for (std::size_t i = 0; i < panel.values.shape(0); ++i)
            for (std::size_t j = 0; j < panel.values.shape(1); ++j)
                out << panel.style.title << '\t' << i << '\t' << j << '\t'
                    << panel.values(i, j) << '\n';
}

/// Write every series as "series x y" lines.
inline void write_series_tsv(const std::filesystem::path& figure,
                             const std::vector<Series>& series)
{
    std::ofstream out(data_path(figure));
    out << "# series\tx\ty\n" << std::setprecision(9);
    for (const Series& curve : series)
        for (std::size_t i = 0; i < curve.x.size(); ++i)
            out << curve.label << '\t' << curve.x[i] << '\t' << curve.y[i] << '\n';
}

// ⟨Set the axes of a heatmap⟩ 00-instruments.md:921
/// Whether `labels`, one per cell along an axis `length` pixels long, stand apart:
/// each non-empty label is at least `room(a, b)` pixels from the next.
template <class Room>
bool labels_stand_apart(const std::vector<std::string>& labels, double length,
                        Room room)
{
    const double cell = length / double(std::max<std::size_t>(labels.size(), 1));
    std::size_t last = labels.size();  // the last non-empty label so far: none
    for (std::size_t a = 0; a < labels.size(); ++a) {
        if (labels[a].empty()) continue;
        const bool crowded = last < labels.size() &&
                             double(a - last) * cell < room(labels[last], labels[a]);
        if (crowded) return false;
        last = a;
    }
    return true;
}

/// Whether `labels` fit side by side, level, under a plot about `width` pixels wide.
inline bool labels_fit_level(const std::vector<std::string>& labels, double width = 400)
{
    // half of each label on either side of its tic, a letter ≈ 0.6 em, a space between
    const auto room = [](const std::string& a, const std::string& b) {
        return (double(a.size() + b.size()) / 2 + 1) * 0.6 * font_size;
    };
    return labels_stand_apart(labels, width, room);
}

/// Of the non-empty labels, numbers first, first + step, … kept; the others empty.
inline std::vector<std::string> every_nth(const std::vector<std::string>& labels,
                                         std::size_t first, std::size_t step)
{
    std::vector<std::string> kept(labels.size());
    std::size_t count = 0;  // non-empty labels so far
    for (std::size_t j = 0; j < labels.size(); ++j)
        if (!labels[j].empty() && count++ % step == first) kept[j] = labels[j];
    return kept;
}

/// @brief Level tic labels for m columns on a plot `width` pixels wide: all under the
/// axis when they fit; else alternately under and over it; else every few under it.
inline std::string column_tics(const std::vector<std::string>& labels, std::size_t m,
                               double width)
{
    if (labels.empty() || labels_fit_level(labels, width))
        return "set xtics " + tic_labels(labels, m) + "\nunset x2tics\n";
    if (labels_fit_level(every_nth(labels, 0, 2), width) &&
        labels_fit_level(every_nth(labels, 1, 2), width))
        return "set xtics " + tic_labels(every_nth(labels, 0, 2), m) +
               "\nset x2tics " + tic_labels(every_nth(labels, 1, 2), m) +
               "\nset x2range [-0.5:" + std::to_string(m - 0.5) + "]\n";
    std::size_t step = 3;
    while (!labels_fit_level(every_nth(labels, 0, step), width)) ++step;
    return "set xtics " + tic_labels(every_nth(labels, 0, step), m) +
           "\nunset x2tics\n";
}

/// @brief Tic labels for n rows on a plot `height` pixels tall: every label when the
/// rows are a line of text high, else every few.
inline std::string row_tics(const std::vector<std::string>& labels, std::size_t n,
                            double height)
{
    const double line = 1.2 * font_size;  // pixels of one line of text
    const auto one_line = [&](const std::string&, const std::string&) { return line; };
    if (labels.empty() || labels_stand_apart(labels, height, one_line))
        return tic_labels(labels, n);
    const auto step = std::size_t(std::ceil(double(n) * line / height));
    return tic_labels(every_nth(labels, 0, step), n);
}

/// @brief The axes of a heatmap of n rows and m columns about `width` pixels wide: rows
/// top down, one tic per token, the colour range and palette, or for a categorical map
/// no colour bar.
inline void set_heatmap_axes(Figure& figure, const HeatmapStyle& style, std::size_t n,
                             std::size_t m, double width = 400)
{
    figure << "set xlabel " << quote(style.x_label) << "\nset ylabel "
           << quote(style.y_label) << "\nset cblabel " << quote(style.colorbar_label)
           << "\nset xrange [-0.5:" << m - 0.5 << "]\nset yrange [" << n - 0.5
           << ":-0.5]\nset size ratio " << double(n) / double(m)
           << "\nunset grid\nset tics scale 0\n"
           << column_tics(style.col_labels, m, width)
           << "set ytics "
           << row_tics(style.row_labels, n,
                       std::min(1.0, double(n) / double(m)) * width)
           << "\n"
           << "set palette " << (style.diverging ? "@diverging_palette" : "@viridis")
           << "\n" << (style.categories.empty() ? "set" : "unset") << " colorbox\n"
           // room for the colour bar, however wide the matrix; a key finds its own
           << (style.categories.empty() ? "set rmargin 14\n" : "set rmargin\n");
    if (style.probabilities) figure << "set cbrange [0:1]\n";
    else if (!std::isnan(style.colour_max))
        figure << "set cbrange [0:" << style.colour_max << "]\n";
    else figure << "set autoscale cb\n";
}

// ⟨Draw a heatmap⟩ 00-instruments.md:1019
/// The key of a heatmap, as gnuplot's key entries: one per category, and the masked
/// cells' grey if there is a mask.
inline std::string key_entries(const HeatmapStyle& style)
{
    const std::string swatch = "keyentry with boxes fill solid 1.0 noborder fillcolor ";
    std::string entries;
    for (std::size_t k = 0; k < style.categories.size(); ++k)
        entries += (k ? ", " : "") + swatch + "linetype " + std::to_string(k + 1) +
                   " title " + quote(style.categories[k]);
    if (style.allowed.size() != 0)
        entries += (entries.empty() ? "" : ", ") + swatch + "rgb masked_colour title " +
                   quote(style.masked_label);
    return entries;
}

/// @brief Send the cells of `values` (n×m) to gnuplot as one plot: an image on the
/// colour map, or for a categorical map one block of boxes per category; masked cells
/// grey. `key` places the key ("" for none); its entries are drawn even for a category
/// that has no cell here, so a key is the same in every panel. `placement`: gnuplot
/// settings that override the axes' (a grid's margins), sent before the plot.
inline void plot_heatmap(Figure& figure, const xt::xtensor<double, 2>& values,
                         const HeatmapStyle& style, const std::string& key,
                         double width = 400, const std::string& placement = "")
{
    const std::size_t n = values.shape(0), m = values.shape(1);
    const bool masked = style.allowed.size() != 0;
    if (masked && (style.allowed.shape(0) != n || style.allowed.shape(1) != m))
        throw std::invalid_argument(
            "heatmap: mask shape differs from the values' shape");
    const std::size_t kinds = style.categories.size();
    // block 0: masked cells, drawn over the rest; 1..kinds: one per category, or
    // 1: the image, every cell (an image needs the whole grid; masked ones as 0)
    std::vector<std::vector<std::tuple<double, double, double>>> blocks(
        kinds ? kinds + 1 : 2);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < m; ++j) {
            const bool visible = !masked || style.allowed(i, j);
            const double v = visible ? values(i, j) : 0.0;
            if (!visible) blocks[0].emplace_back(double(j), double(i), v);
            if (!kinds) blocks[1].emplace_back(double(j), double(i), v);
            else if (visible) {
                const long kind = std::lround(v);
                if (kind < 1 || kind > long(kinds))
                    throw std::invalid_argument("heatmap: a value names no category");
                blocks[std::size_t(kind)].emplace_back(double(j), double(i), v);
            }
        }
    set_heatmap_axes(figure, style, n, m, width);
    figure << placement;
    if (style.diverging) {
        const double reach = std::max(double(xt::amax(xt::abs(values))()), 1e-300);
        figure << "set cbrange [" << -reach << ":" << reach << "]\n";
    }
    figure << "set title " << quote(style.title) << "\n"
           << (key.empty() ? "unset key" : "set key " + key) << "\nplot ";
    const std::string box = "using 1:2:(0.5):(0.5) with boxxyerror fill solid 1.0 "
                            "noborder fillcolor ";
    std::string plots;  // the plot's parts, comma separated
    const auto add = [&](const std::string& part) {
        plots += (plots.empty() ? "" : ", ") + part;
    };
    for (std::size_t b = 1; b < blocks.size(); ++b)
        if (!blocks[b].empty())
            add(kinds ? "'-' " + box + "linetype " + std::to_string(b) + " notitle"
                      : "'-' using 1:2:3 with image pixels notitle");
    if (!blocks[0].empty()) add("'-' " + box + "rgb masked_colour notitle");
    if (!key.empty() && (kinds || masked)) add(key_entries(style));
    figure << plots << "\n";
    for (std::size_t b = 1; b < blocks.size(); ++b)
        if (!blocks[b].empty()) figure.send(blocks[b]);
    if (!blocks[0].empty()) figure.send(blocks[0]);
}

/// @brief Draw `values` (n×m) as a heatmap into the SVG file `path`, and its data as
/// `path`.tsv.
inline void heatmap(const std::filesystem::path& path,
                    const xt::xtensor<double, 2>& values, const HeatmapStyle& style)
{
    const bool masked = style.allowed.size() != 0;
    if (masked && style.allowed.shape() != values.shape())
        throw std::invalid_argument(
            "heatmap: mask shape differs from the values' shape");
    write_matrix_tsv(path, values, masked ? &style.allowed : nullptr);
    Figure figure(path);
    const bool keyed = masked || !style.categories.empty();
    plot_heatmap(figure, values, style,
                 keyed ? (style.categories.empty()
                              ? "at screen 0.98, screen 0.02 right bottom"
                              : "outside right center vertical Left reverse nobox")
                       : "");
}

// ⟨Lay out a grid of heatmaps⟩ 00-instruments.md:1123
/// Whether the panels share one continuous colour scale: no categories, no
/// diverging palette, and the same range and colour bar name in every panel.
inline bool share_colour_scale(const std::vector<Panel>& panels)
{
    const HeatmapStyle& first = panels[0].style;
    return std::all_of(panels.begin(), panels.end(), [&](const Panel& panel) {
        const HeatmapStyle& style = panel.style;
        const bool same_max = style.colour_max == first.colour_max ||
                              (std::isnan(style.colour_max) &&
                               std::isnan(first.colour_max));
        return style.categories.empty() && !style.diverging && same_max &&
               style.probabilities == first.probabilities &&
               style.colorbar_label == first.colorbar_label;
    });
}

/// Where the panels of a grid go, in pixels of the drawing (origin top left).
struct GridLayout {
    std::vector<double> left, top;       ///< of each column's, each row's panels
    std::vector<double> panel_h;         ///< each row's tallest panel
    double panel_w = 0;                  ///< every panel's plot area
    double colour_bar = 0;               ///< room for one colour bar
    bool shared_bar = false;             ///< one colour bar for the grid
    double strip = 0;                    ///< the key strip under the panels
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

/// Whether panel p names its y axis: it is first in its row or its left
/// neighbour names another.
inline bool names_y(const std::vector<Panel>& panels, std::size_t p,
                    std::size_t columns)
{
    return p % columns == 0 || panels[p - 1].style.y_label != panels[p].style.y_label;
}

/// Whether panel p names its x axis: no panel below it names the same.
inline bool names_x(const std::vector<Panel>& panels, std::size_t p,
                    std::size_t columns)
{
    return p + columns >= panels.size() ||
           panels[p + columns].style.x_label != panels[p].style.x_label;
}

/// @brief The layout of `panels`, `columns` a row, on a canvas `width` pixels wide.
inline GridLayout grid_layout(const std::vector<Panel>& panels, std::size_t columns,
                              int width)
{
    const double letter = 0.6 * font_size, line = 1.9 * font_size;  // in pixels
    const std::size_t rows = (panels.size() + columns - 1) / columns;
    GridLayout g;
    g.shared_bar = share_colour_scale(panels);
    const bool keyed = std::any_of(panels.begin(), panels.end(), [](const Panel& p) {
        return !p.style.categories.empty() || p.style.allowed.size() != 0;
    });
    const bool bars = std::any_of(panels.begin(), panels.end(), [](const Panel& p) {
        return p.style.categories.empty();
    });
    g.colour_bar = bars ? 5.5 * line : 0;
    std::vector<double> room(columns, 16);  // left of each column's panels
    for (std::size_t p = 0; p < panels.size(); ++p) {
        const HeatmapStyle& style = panels[p].style;
        const double labels =
            letter * double(longest_label(style.row_labels, panels[p].values.shape(0)));
        const double name = names_y(panels, p, columns) ? 2 * line : 0;
        room[p % columns] = std::max(room[p % columns], labels + 28 + name);
    }
    double used = g.colour_bar * (g.shared_bar ? 1.0 : double(columns)) + 16;
    for (double r : room) used += r;
    g.panel_w = (width - used) / double(columns);
    for (std::size_t c = 0; c < columns; ++c)  // after the previous column's panels
        g.left.push_back((c ? g.left.back() + g.panel_w : 0) + room[c] +
                         (c && !g.shared_bar ? g.colour_bar : 0));
    double y = 0;
    for (std::size_t r = 0; r < rows; ++r) {
        double above = 1.6 * line, height = 0, below = 8 + line;
        const std::size_t end = std::min(panels.size(), (r + 1) * columns);
        for (std::size_t p = r * columns; p < end; ++p) {
            const auto& values = panels[p].values;
            const std::size_t m = values.shape(1);
            height = std::max(height, g.panel_w * double(values.shape(0)) / double(m));
            if (column_tics(panels[p].style.col_labels, m, g.panel_w)
                    .find("set x2tics") != std::string::npos)
                above = 1.6 * line + line;  // labels over the axis too
            if (names_x(panels, p, columns)) below = 8 + line + 1.6 * line;
        }
        g.top.push_back(y + above);
        g.panel_h.push_back(height);
        y += above + height + below;
    }
    g.strip = keyed ? 2 * line : 0;
    g.width = width;
    g.height = int(std::ceil(y + g.strip));
    return g;
}

// ⟨Draw a grid of heatmaps⟩ 00-instruments.md:1233
/// The gnuplot settings that place panel p of a grid where `g` says, with its
/// axis names, its colour bar (or none) and the grid's colour range.
inline std::string place_panel(const std::vector<Panel>& panels, std::size_t p,
                               std::size_t columns, const GridLayout& g,
                               const std::string& colour_range)
{
    const std::size_t row = p / columns, column = p % columns;
    const double left = g.left[column], top = g.top[row];
    const double right = left + g.panel_w, bottom = top + g.panel_h[row];
    const auto x = [&](double pixels) { return std::to_string(pixels / g.width); };
    const auto y = [&](double from_top) {
        return std::to_string(1 - from_top / g.height);
    };
    const HeatmapStyle& style = panels[p].style;
    std::string settings = "set size noratio\nset lmargin at screen " + x(left) +
                           "\nset rmargin at screen " + x(right) +
                           "\nset tmargin at screen " + y(top) +
                           "\nset bmargin at screen " + y(bottom) + "\n" + colour_range;
    if (!names_y(panels, p, columns)) settings += "set ylabel ''\n";
    if (!names_x(panels, p, columns)) settings += "set xlabel ''\n";
    const double bar_top = g.shared_bar ? g.top.front() : top;
    const double bar_bottom = g.shared_bar ? g.top.back() + g.panel_h.back() : bottom;
    const double bar_left = g.shared_bar ? g.width - g.colour_bar + 8 : right + 16;
    const bool bar =
        style.categories.empty() && (!g.shared_bar || p + 1 == panels.size());
    if (!bar) return settings + "unset colorbox\n";
    return settings + "set colorbox user origin screen " + x(bar_left) + ", screen " +
           y(bar_bottom) + " size screen " + x(20) + ", screen " +
           std::to_string((bar_bottom - bar_top) / g.height) + "\n";
}

/// The colour range of panels sharing a scale, not probabilities, without a fixed
/// top: all their values; else none (each panel's style sets its own).
inline std::string shared_colour_range(const std::vector<Panel>& panels,
                                       const GridLayout& g)
{
    const HeatmapStyle& style = panels[0].style;
    if (!g.shared_bar || style.probabilities || !std::isnan(style.colour_max))
        return "";
    double low = panels[0].values(0, 0), high = low;
    for (const Panel& panel : panels)
        for (double value : panel.values)
            low = std::min(low, value), high = std::max(high, value);
    if (high == low) high = low + 1;
    return "set cbrange [" + std::to_string(low) + ":" + std::to_string(high) + "]\n";
}

/// @brief Draw `panels` as one SVG figure `path`, `columns` panels a row, on a
/// canvas `width` pixels wide; the data as `path`.tsv ("panel row col value",
/// panel = its title). Panels sharing a continuous scale share one colour bar;
/// categories and masked cells are named once, in a key strip under the panels.
inline void heatmap_grid(const std::filesystem::path& path,
                         const std::vector<Panel>& panels, std::size_t columns,
                         int width = 1000)
{
    if (panels.empty() || columns == 0)
        throw std::invalid_argument("heatmap_grid: need panels and columns");
    for (const Panel& panel : panels)
        if (panel.values.size() == 0)
            throw std::invalid_argument("heatmap_grid: a panel has no cells");
    write_panels_tsv(path, panels);
    columns = std::min(columns, panels.size());
    const GridLayout g = grid_layout(panels, columns, width);
    const std::string colour_range = shared_colour_range(panels, g);
    Figure figure(path, svg_terminal(g.width, g.height));
    figure << "set multiplot\n";
    for (std::size_t p = 0; p < panels.size(); ++p)
        plot_heatmap(figure, panels[p].values, panels[p].style, "", g.panel_w,
                     place_panel(panels, p, columns, g, colour_range));
    const auto keyed = std::find_if(panels.begin(), panels.end(), [](const Panel& p) {
        return !p.style.categories.empty() || p.style.allowed.size() != 0;
    });
    if (keyed != panels.end())
        figure << "set lmargin at screen 0\nset rmargin at screen 1\n"
                  "set bmargin at screen 0\nset tmargin at screen "
               << g.strip / g.height
               << "\nunset border\nunset tics\nunset x2tics\nunset xlabel\n"
                  "unset ylabel\nunset title\nunset colorbox\nset xrange [0:1]\n"
                  "set yrange [0:1]\n"
                  "set key center center horizontal maxrows 1 nobox noopaque\n"
                  "plot 2 notitle, "  // nothing in range: the key alone
               << key_entries(keyed->style) << "\n";
    figure << "unset multiplot\n";
}

// ⟨Give dense attention its own line style⟩ 00-instruments.md:1338
/// The line style the shared style file reserves for dense attention.
constexpr int dense_line_style = 8;

/// Whether `label` names dense attention: it starts with "dense", in any case.
inline bool is_dense(const std::string& label)
{
    const std::string word = "dense";
    if (label.size() < word.size()) return false;
    for (std::size_t c = 0; c < word.size(); ++c)
        if (std::tolower(static_cast<unsigned char>(label[c])) != word[c]) return false;
    return true;
}

/// @brief The line style of each series: dense attention's own for a dense series,
/// the others' styles 1, 2, …, 7 in order (then again) for the rest.
inline std::vector<int> line_styles(const std::vector<Series>& series)
{
    std::vector<int> styles;
    int next = 0;  // the other series so far
    for (const Series& curve : series)
        styles.push_back(is_dense(curve.label) ? dense_line_style
                                               : 1 + next++ % (dense_line_style - 1));
    return styles;
}

/// Send one series' points to gnuplot as an inline data block.
inline void send_series(Figure& figure, const Series& curve)
{
    std::vector<std::pair<double, double>> points;
    for (std::size_t i = 0; i < curve.x.size(); ++i)
        points.emplace_back(curve.x[i], curve.y[i]);
    figure.send(points);
}

// ⟨Draw a line plot⟩ 00-instruments.md:1374
/// @brief Draw `series` into the SVG file `path`, and their data as `path`.tsv.
inline void lines(const std::filesystem::path& path, const std::vector<Series>& series,
                  const LinePlotStyle& style)
{
    write_series_tsv(path, series);
    // A key below the plot gets no box or background and a line of room above it,
    // so it never covers the label of the x axis.
    const bool below = style.key.find("below") != std::string::npos;
    Figure figure(path);
    figure << "set title " << quote(style.title) << "\n"
           << "set xlabel " << quote(style.x_label) << "\nset ylabel "
           << quote(style.y_label) << "\n"
           << "set key " << style.key << (below ? " height 1 nobox noopaque" : "")
           << "\n";
    if (style.log_x) figure << "set logscale x 2\nset format x '%g'\n";
    if (style.log_y) figure << "set logscale y\nset format y '%g'\n";
    if (!std::isnan(style.y_min) && !std::isnan(style.y_max))
        figure << "set yrange [" << style.y_min << ":" << style.y_max << "]\n";
    const std::vector<int> styles = line_styles(series);
    figure << "plot ";
    for (std::size_t s = 0; s < series.size(); ++s)
        figure << (s ? ", " : "") << "'-' using 1:2 with " << series[s].with
               << " linestyle " << styles[s] << " title " << quote(series[s].label);
    figure << "\n";
    for (const Series& curve : series) send_series(figure, curve);
}

// ⟨Leave room for the key above the curves⟩ 00-instruments.md:1407
/// @brief A log y range from the decade below the lowest point to the decade of the
/// highest and one more decade for every two curves, and the key at the top left in
/// that room, clear of the curves.
inline void leave_room_for_the_key(LinePlotStyle& style,
                                   const std::vector<Series>& curves)
{
    double lowest = INFINITY, highest = 0;
    for (const Series& curve : curves)
        for (double y : curve.y) {
            lowest = std::min(lowest, y);
            highest = std::max(highest, y);
        }
    style.y_min = std::pow(10.0, std::floor(std::log10(lowest)));
    const double room = std::ceil(double(curves.size()) / 2);  // decades for the key
    style.y_max = std::pow(10.0, std::ceil(std::log10(highest)) + room);
    style.key = "top left Left reverse samplen 1.5";
}

// ⟨Draw an animated heatmap⟩ 00-instruments.md:1603
/// @brief Draw one heatmap per frame into the animated GIF `path`, `titles[f]` over
/// frame f.
/// @param frames each n×m, all the same shape
inline void heatmap_animation(const std::filesystem::path& path,
                              const std::vector<xt::xtensor<double, 2>>& frames,
                              const std::vector<std::string>& titles,
                              HeatmapStyle style, int delay_cs = 60)
{
    if (frames.empty() || frames.size() != titles.size())
        throw std::invalid_argument(
            "heatmap_animation: need one title per frame and at least one frame");
    const std::size_t n = frames[0].shape(0), m = frames[0].shape(1);
    Figure figure(path, "set terminal gif animate delay " + std::to_string(delay_cs) +
                            " loop 0 size 640,560 enhanced font 'DejaVu Sans," +
                            std::to_string(font_size) + "' background rgb 'white'");
    for (std::size_t f = 0; f < frames.size(); ++f) {
        if (frames[f].shape(0) != n || frames[f].shape(1) != m)
            throw std::invalid_argument("heatmap_animation: frames differ in shape");
        style.title = titles[f];
        plot_heatmap(figure, frames[f], style, "");
    }
}

}  // namespace attn::plot

namespace attn {
using plot::Series;
}  // namespace attn
