/*
 * Replays a libFuzzer target's corpus and saved crashers without libFuzzer,
 * so `make check` (any compiler, also under ASan/UBSan) runs every input
 * ever saved. Each target is linked with this file; FUZZ_NAME names its
 * directories: $FERRY_SRCDIR/fuzz/corpus/NAME and fuzz/crashers/NAME.
 * Arguments, when given, are files or directories to replay instead.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
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
        char *file;
        if (asprintf(&file, "%s/%s", path, e->d_name) < 0)
            break;
        count += replay_path(file);
        free(file);
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
        static const char *const kinds[] = {"corpus", "crashers"};
        for (int i = 0; i < 2; i++) {
            char *dir;
            if (asprintf(&dir, "%s/fuzz/%s/%s", src ? src : ".", kinds[i], FUZZ_NAME) < 0)
                return 1;
            count += replay_path(dir);
            free(dir);
        }
    }
    printf("%s: replayed %d inputs\n", FUZZ_NAME, count);
    return count > 0 ? 0 : 1;
}
