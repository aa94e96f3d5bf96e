"""`toolkit doctor` reads the CPU features that decide onnxruntime's int8 kernels."""

from toolkit.core.hardware import cpu_features

AVX2_ONLY = "processor : 0\nflags : fpu sse4_2 avx fma avx2 bmi2\n"
SPR = "flags : avx2 avx512f avx512_vnni avx_vnni amx_int8 amx_tile\n"
ORIN = "processor : 0\nFeatures : fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimdhp asimddp\n"


def test_avx2_only_cpu_is_called_out():
    info = cpu_features(AVX2_ONLY, "x86_64")
    assert info["features"] == {"avx2": True, "avx512": False, "avx512_vnni": False,
                                "avx_vnni": False, "amx_int8": False}
    assert "saturate" in info["int8_kernels"]


def test_vnni_amx_cpu():
    info = cpu_features(SPR, "x86_64")
    assert info["features"]["avx512_vnni"] and info["features"]["amx_int8"]
    assert "VNNI" in info["int8_kernels"]


def test_jetson_orin_neon_dot_product():
    info = cpu_features(ORIN, "aarch64")
    assert info["features"] == {"neon": True, "dot_product": True, "i8mm": False, "sve": False}
    assert "dot-product" in info["int8_kernels"]
    assert "no int8 dot product" in cpu_features("Features : fp asimd\n", "aarch64")["int8_kernels"]
