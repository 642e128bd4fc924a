// The libraries every chapter's program and test includes, compiled once per build
// (make passes it to g++ with -include): parsing them was a third of each compile.
// Only the optimised build uses it; SANITIZE=1 compiles without it, so each file is
// still checked to include what it uses.
#include <gnuplot-iostream.h>
#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xreducer.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
