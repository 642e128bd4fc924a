// A check shared by the tests of chapters 6-9: an efficient kernel never holds an n×n matrix.
#pragma once

#include <cstddef>
#include <cstdint>

#include <boost/test/unit_test.hpp>
#include <xtensor/xtensor.hpp>

#include "attn/measure.hpp"
#include "test_support.hpp"

namespace test_support {

/// Check that `kernel(Q, K, V)` on n = 4096 random float rows (d_k = d_v = 16) peaks below
/// a sixteenth of one n×n float matrix (4n² bytes, 64 MiB). Not checked under
/// AddressSanitizer, whose quarantine of freed blocks makes the peak count every
/// allocation of the call, not what it holds at once.
template <class Kernel>
void check_never_holds_an_n_by_n_matrix(Kernel kernel, std::uint64_t seed)
{
#if defined(__SANITIZE_ADDRESS__)
    BOOST_TEST_MESSAGE("peak memory not checked under AddressSanitizer");
    return;
#endif
    const std::size_t n = 4096;
    const auto [Q, K, V] = random_inputs(n, 16, 16, seed);
    const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
    const std::size_t peak =
        attn::largest_peak_memory_bytes([&] { return kernel(Q_f, K_f, V_f); });
    BOOST_TEST(peak < 4 * n * n / 16, "peak " << peak << " bytes");
}

}  // namespace test_support
