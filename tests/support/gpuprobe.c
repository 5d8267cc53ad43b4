/* gpuprobe LIB...: dlopen each library by name, as CUDA programs, EGL and
 * Vulkan loaders do, and print "ok LIB" or "fail LIB: <dlerror>", one line
 * each. Exit 0 always: the test reads the lines. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
        if (h)
            printf("ok %s\n", argv[i]);
        else
            printf("fail %s: %s\n", argv[i], dlerror());
    }
    return 0;
}
