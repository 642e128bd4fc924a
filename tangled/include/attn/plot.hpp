// Generated from chapters/00-instruments.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief The book's plotting layer: heatmaps, line plots and animations through
/// gnuplot-iostream.

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
#include <xtensor/xtensor.hpp>

namespace attn::plot {

// ⟨Format text for gnuplot⟩ 00-instruments.md:1006
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

// ⟨Open gnuplot on one figure⟩ 00-instruments.md:927
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

// ⟨Describe a heatmap⟩ 00-instruments.md:788
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
};

// ⟨Describe a line plot⟩ 00-instruments.md:872
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

// ⟨Write the data behind a figure⟩ 00-instruments.md:1048
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

// ⟨Set the axes of a heatmap⟩ 00-instruments.md:807
/// Whether `labels` fit side by side, level, under a plot about `width` pixels wide.
inline bool labels_fit_level(const std::vector<std::string>& labels, double width = 400)
{
    double characters = 0;
    for (const std::string& label : labels) characters += double(label.size()) + 1;
    return characters * 0.6 * font_size <= width;  // a DejaVu Sans letter ≈ 0.6 em
}

/// @brief The axes of a heatmap of n rows and m columns: rows top down, one tic per
/// token, the colour bar's label and range, room for the colour bar.
inline void set_heatmap_axes(Figure& figure, const HeatmapStyle& style, std::size_t n,
                             std::size_t m)
{
    figure << "set xlabel " << quote(style.x_label) << "\nset ylabel "
           << quote(style.y_label) << "\nset cblabel " << quote(style.colorbar_label)
           << "\nset xrange [-0.5:" << m - 0.5 << "]\nset yrange [" << n - 0.5
           << ":-0.5]\nset size ratio " << double(n) / double(m)
           << "\nunset grid\nset tics scale 0\nset xtics "
           << tic_labels(style.col_labels, m)
           << (labels_fit_level(style.col_labels) ? "" : " rotate by 90 right")
           << "\nset ytics " << tic_labels(style.row_labels, n) << "\n";
    if (style.probabilities) figure << "set cbrange [0:1]\n";
    figure << "set rmargin 14\n";  // room for the colour bar, however wide the matrix
}

// ⟨Draw a heatmap⟩ 00-instruments.md:834
/// @brief Draw `values` (n×m) as a heatmap into the SVG file `path`, and its data as
/// `path`.tsv.
inline void heatmap(const std::filesystem::path& path,
                    const xt::xtensor<double, 2>& values, const HeatmapStyle& style)
{
    const std::size_t n = values.shape(0), m = values.shape(1);
    const bool masked = style.allowed.size() != 0;
    if (masked && (style.allowed.shape(0) != n || style.allowed.shape(1) != m))
        throw std::invalid_argument(
            "heatmap: mask shape differs from the values' shape");
    write_matrix_tsv(path, values, masked ? &style.allowed : nullptr);

    Figure figure(path);
    figure << "set title " << quote(style.title) << "\n";
    set_heatmap_axes(figure, style, n, m);
    figure << (masked ? "set key at screen 0.98, screen 0.02 right bottom\n"
                      : "unset key\n");
    figure << "plot '-' using 1:2:3 with image pixels notitle";
    if (masked)
        figure << ", '-' using 1:2:(0.5):(0.5) with boxxyerror fill solid 1.0 noborder"
                  " fillcolor rgb masked_colour title 'masked'";
    figure << "\n";
    std::vector<std::tuple<double, double, double>> cells;
    std::vector<std::pair<double, double>> hidden;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < m; ++j) {
            const bool visible = !masked || style.allowed(i, j);
            cells.emplace_back(double(j), double(i), visible ? values(i, j) : 0.0);
            if (!visible) hidden.emplace_back(double(j), double(i));
        }
    figure.send(cells);
    if (masked) figure.send(hidden);
}

// ⟨Draw a line plot⟩ 00-instruments.md:889
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
    figure << "plot ";
    for (std::size_t s = 0; s < series.size(); ++s)
        figure << (s ? ", " : "") << "'-' using 1:2 with " << series[s].with
               << " linestyle " << s + 1 << " title " << quote(series[s].label);
    figure << "\n";
    for (const Series& curve : series) {
        std::vector<std::pair<double, double>> points;
        for (std::size_t i = 0; i < curve.x.size(); ++i)
            points.emplace_back(curve.x[i], curve.y[i]);
        figure.send(points);
    }
}

// ⟨Draw an animated heatmap⟩ 00-instruments.md:1085
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
    set_heatmap_axes(figure, style, n, m);
    figure << "unset key\n";
    for (std::size_t f = 0; f < frames.size(); ++f) {
        figure << "set title " << quote(titles[f])
               << "\nplot '-' using 1:2:3 with image pixels notitle\n";
        std::vector<std::tuple<double, double, double>> cells;
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < m; ++j)
                cells.emplace_back(double(j), double(i), frames[f](i, j));
        figure.send(cells);
    }
}

}  // namespace attn::plot

namespace attn {
using plot::Series;
}  // namespace attn
