# The book's one gnuplot style, loaded by every figure (attn::plot::Figure).

set encoding utf8
set border linewidth 1 linecolor rgb '#404040'
set tics textcolor rgb '#202020' nomirror
set grid linecolor rgb '#dddddd' linewidth 0.6 dashtype 1
set key box linecolor rgb '#bbbbbb' opaque samplen 2.5 spacing 1.2
set title font ',17'

# Colour map: viridis (perceptually uniform, readable in grey and by colour-blind readers).
viridis = "defined (0 '#440154', 0.125 '#472d7b', 0.25 '#3b528b', 0.375 '#2c728e', " . \
          "0.5 '#21918c', 0.625 '#28ae80', 0.75 '#5ec962', 0.875 '#addc30', 1 '#fde725')"
set palette @viridis
set colorbox vertical user origin graph 1.04, graph 0 size character 1.5, graph 1

# Differences (signed, centred on 0): blue below, white at 0, red above (attn::plot loads it
# with a colour range symmetric about 0).
diverging_palette = "defined (0 '#2166ac', 0.25 '#92c5de', 0.5 '#f7f7f7', " . \
                    "0.75 '#f4a582', 1 '#b2182b')"

# Masked cells: a grey outside the colour map.
masked_colour = '#b9b9b9'

# Curves: the Okabe-Ito colours, safe for colour-blind readers, with a dark purple in place
# of their yellow (too pale on white). attn::plot::lines gives them in order to every series
# but dense attention.
set linetype 1 linecolor rgb '#0072b2' linewidth 2 pointtype 7 pointsize 0.7
set linetype 2 linecolor rgb '#d55e00' linewidth 2 pointtype 5 pointsize 0.7
set linetype 3 linecolor rgb '#009e73' linewidth 2 pointtype 9 pointsize 0.8
set linetype 4 linecolor rgb '#cc79a7' linewidth 2 pointtype 13 pointsize 0.8
set linetype 5 linecolor rgb '#e69f00' linewidth 2 pointtype 11 pointsize 0.8
set linetype 6 linecolor rgb '#56b4e9' linewidth 2 pointtype 3 pointsize 0.8
set linetype 7 linecolor rgb '#6a3d9a' linewidth 2 pointtype 1 pointsize 0.8
# Dense attention, the reference every chapter compares with: black, open circles, in every
# figure (attn::plot::lines gives it to any series whose label starts with "dense").
set linetype 8 linecolor rgb '#000000' linewidth 2 pointtype 6 pointsize 0.9
set linetype cycle 8
do for [i=1:8] { set style line i linetype i }
