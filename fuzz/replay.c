/*
 * Replays a libFuzzer target's corpus and saved crashers without libFuzzer,
 * so `make check` (any compiler, also under ASan/UBSan) runs every input
 * ever saved. Each target is linked with this file; FUZZ_NAME names its
 * directories: $FERRY_SRCDIR/fuzz/corpus/NAME and fuzz/crashers/NAME.
 * Arguments, when given, are files or directories to replay instead.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *grown = realloc(buf, cap *= 2);
            if (!grown) {
                free(buf);
                buf = NULL;
            }
            buf = grown;
        }
    }
    fclose(f);
    if (!buf)
        return -1;
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

/* Replays a file, or every regular file of a directory. Returns the count. */
static int replay_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return replay_file(path) == 0;
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char file[4096];
        snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
        count += replay_path(file);
    }
    closedir(d);
    return count;
}

int main(int argc, char **argv)
{
    int count = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            count += replay_path(argv[i]);
    } else {
        const char *src = getenv("FERRY_SRCDIR");
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/fuzz/corpus/%s", src ? src : ".", FUZZ_NAME);
        count += replay_path(dir);
        snprintf(dir, sizeof(dir), "%s/fuzz/crashers/%s", src ? src : ".", FUZZ_NAME);
        count += replay_path(dir);
    }
    printf("%s: replayed %d inputs\n", FUZZ_NAME, count);
    return count > 0 ? 0 : 1;
}
