// Generated from chapters/05-visualizing-attention.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>

#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/tiny_model.hpp"
#include "attn/visualize.hpp"
// ⟨Include the patterns of later chapters⟩ 05-visualizing-attention.md:551
#include "attn/bigbird.hpp"
#include "attn/longformer.hpp"
#include "attn/masked_attention.hpp"
#include "attn/sliding_window.hpp"
#include "attn/sparse_transformer.hpp"

int main(int argc, char** argv)
{
    return attn::run_program(
        argc, argv, "ch05",
        "what the tiny model of chapter 4 attends to, and every pattern",
        [](const attn::Options& options, attn::Results& results) {
            const std::filesystem::path& out = options.out;
            // ⟨Load chapter 4's model and snapshots⟩ 05-visualizing-attention.md:22
            const std::filesystem::path model_file =
                options.model.empty() ? std::filesystem::path("figures/ch04/model.txt")
                                      : options.model;
            const std::filesystem::path snapshots_file = model_file.parent_path() / "snapshots.txt";
            if (!std::filesystem::exists(model_file) || !std::filesystem::exists(snapshots_file))
                throw std::runtime_error("chapter 4's trained model is missing (" +
                                         model_file.string() + "): run `make run-ch04` first");
            const attn::TinyModel<float> model = attn::load_model<float>(model_file);
            std::vector<std::size_t> probe;
            const std::vector<attn::AttentionSnapshot> snapshots =
                attn::load_snapshots(snapshots_file, probe);
            const std::size_t n = model.shape.n, layers = model.shape.layers,
                              heads = model.shape.heads;
            results.add("layers", double(layers));
            results.add("heads", double(heads));
            // ⟨Draw every head on the probe word⟩ 05-visualizing-attention.md:75
            const std::vector<std::string> letters = attn::token_letters(probe);
            const auto maps = attn::attention_maps(model, probe);  // [layer][head], n×n
            attn::plot::head_grid(out / "heads.svg", maps, letters);
            const auto plotted = attn::plot::read_panels_tsv(out / "heads.svg");
            double plotted_difference = 0;
            for (std::size_t l = 0, k = 0; l < layers; ++l)
                for (std::size_t h = 0; h < heads; ++h, ++k)
                    plotted_difference =
                        std::max(plotted_difference,
                                 double(xt::amax(xt::abs(plotted.at(k) - maps[l][h]))()));
            results.add("head_panels", double(plotted.size()));
            results.add("plotted_vs_model_max_abs_difference", plotted_difference, 2);
            // ⟨Measure each head against the anti-diagonal⟩ 05-visualizing-attention.md:145
            std::mt19937_64 agreement_rng(options.seed ^ 0xa77e17ULL);
            const auto agreement =
                attn::ideal_key_agreement(model, attn::reversal_ideal_keys(n), 200, agreement_rng);
            std::size_t best_layer = 0, best_head = 0;
            {
                std::ofstream table(out / "heads.txt");
                table << "layer  head  queries whose largest weight is on key n-1-i\n";
                for (std::size_t l = 0; l < layers; ++l)
                    for (std::size_t h = 0; h < heads; ++h) {
                        table << std::setw(5) << l << std::setw(6) << h << "  " << std::fixed
                              << std::setprecision(3) << agreement[l][h] << '\n';
                        if (agreement[l][h] > agreement[best_layer][best_head])
                            best_layer = l, best_head = h;
                    }
            }
            // ⟨Draw the word-to-word diagrams⟩ 05-visualizing-attention.md:259
            const std::vector<std::size_t> word = attn::letter_tokens("algorithms");
            const std::vector<std::string> word_letters = attn::token_letters(word);
            std::vector<std::string> layer_titles;
            for (std::size_t l = 0; l < layers; ++l)
                layer_titles.push_back("layer " + std::to_string(l));
            attn::plot::word_to_word(out / "word_to_word.svg", attn::attention_maps(model, word),
                                     word_letters, layer_titles);
            // ⟨Animate the training steps⟩ 05-visualizing-attention.md:363
            std::vector<xt::xtensor<double, 2>> step_frames;
            std::vector<std::string> step_titles;
            for (const attn::AttentionSnapshot& snapshot : snapshots) {
                step_frames.push_back(snapshot.maps[best_layer][best_head]);
                step_titles.push_back("Layer " + std::to_string(best_layer) + ", head " +
                                      std::to_string(best_head) + " after " +
                                      std::to_string(snapshot.step) + " Adam steps");
            }
            for (int hold = 0; hold < 6; ++hold) {  // the last frame stays about two seconds
                step_frames.push_back(step_frames.back());
                step_titles.push_back(step_titles.back());
            }
            attn::plot::animate_heatmaps(out / "training.gif", step_frames, step_titles,
                                         {"", letters, letters}, 30);
            results.add_text("animated_head", "layer " + std::to_string(best_layer) + ", head " +
                                                  std::to_string(best_head));
            results.add("training_frames", double(snapshots.size()));
            // ⟨Compare rollout with raw attention⟩ 05-visualizing-attention.md:452
            std::vector<xt::xtensor<double, 2>> layer_means;
            std::vector<attn::plot::Panel> raw_panels;
            for (std::size_t l = 0; l < layers; ++l) {
                layer_means.push_back(attn::average_heads(maps[l]));
                raw_panels.push_back({layer_means.back(),
                                      {"layer " + std::to_string(l) + ", heads averaged", letters,
                                       letters}});
            }
            attn::plot::heatmap_grid(out / "raw.svg", raw_panels, layers);
            const xt::xtensor<double, 2> rollout = attn::attention_rollout(layer_means);  // n×n
            attn::plot::HeatmapStyle rollout_style{"Attention rollout through both layers", letters,
                                                   letters};
            rollout_style.x_label = "input token";
            rollout_style.y_label = "output position";
            rollout_style.colorbar_label = "rolled-out weight";
            attn::plot::heatmap(out / "rollout.svg", rollout, rollout_style);
            double on_mirror = 0, on_self = 0, worst_row_sum = 0;
            for (std::size_t i = 0; i < n; ++i) {
                on_mirror += rollout(i, n - 1 - i) / double(n);
                if (i != n - 1 - i) on_self += rollout(i, i) / double(n);
                worst_row_sum =
                    std::max(worst_row_sum, std::abs(double(xt::sum(xt::row(rollout, i))()) - 1.0));
            }
            results.add("rollout_mass_on_mirror", on_mirror);
            results.add("rollout_mass_on_self", on_self);
            results.add("rollout_row_sum_max_error", worst_row_sum, 2);
            // ⟨Check why rollout ties a letter with its mirror⟩ 05-visualizing-attention.md:488
            double last_on_mirror = 0, mirror_rows_differ = 0;
            for (std::size_t i = 0; i < n; ++i) {
                last_on_mirror += layer_means.back()(i, n - 1 - i) / double(n);
                for (std::size_t j = 0; j < n; ++j)
                    mirror_rows_differ = std::max(mirror_rows_differ,
                                                  std::abs(rollout(i, j) - rollout(n - 1 - i, j)));
            }
            results.add("last_layer_mass_on_mirror", last_on_mirror, 5);
            results.add("rollout_mirror_rows_max_difference", mirror_rows_differ, 2);
            // ⟨Collect every mechanism's pattern at the same n⟩ 05-visualizing-attention.md:559
            const std::size_t n_gallery = 64;
            std::vector<attn::plot::Pattern> gallery = {
                {"dense (ch. 1)", xt::ones<bool>({n_gallery, n_gallery})}};
            gallery.push_back({"causal (ch. 2)", attn::causal_mask(n_gallery)});
            gallery.push_back({"sliding window, w = 8 (ch. 6)",
                               attn::sliding_window_mask(n_gallery, 8)});
            gallery.push_back({"strided, stride 8 (ch. 7)", attn::strided_mask(n_gallery, 8)});
            gallery.push_back({"fixed, stride 8, c = 2 (ch. 7)",
                               attn::fixed_mask(n_gallery, 8, 2)});
            gallery.push_back({"Longformer, w = 4, dilation 2, global 0 (ch. 8)",
                               attn::longformer_mask(n_gallery, 4, 2,
                                                     std::vector<std::size_t>{0})});
            gallery.push_back({"BigBird, blocks of 4, 1 random (ch. 9)",
                               attn::bigbird_mask(n_gallery,
                                                  attn::BigBirdPattern{4, 1, options.seed})});
            attn::plot::pattern_gallery(out / "gallery.svg", gallery);
            {
                std::ofstream table(out / "gallery.txt");
                table << std::left << std::setw(50)
                      << "pattern (n = " + std::to_string(n_gallery) + ")"
                      << "pairs allowed\n";
                for (const attn::plot::Pattern& pattern : gallery)
                    table << std::left << std::setw(50) << pattern.name << std::fixed
                          << std::setprecision(1)
                          << 100.0 * attn::plot::pattern_density(pattern.allowed) << " %\n";
            }
            results.add("gallery_patterns", double(gallery.size()));
            results.add("gallery_n", double(n_gallery));
        });
}
