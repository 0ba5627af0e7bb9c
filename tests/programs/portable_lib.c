/* A shared library for the portable-image test: a function and data whose values the
 * program checks after restore, so the restored mapping must be this very build. */
const char portable_build[] = "PORTABLE_BUILD_MARK";

int portable_answer(int x) { return x * 6 + 0; }
