/* test_cmds.h -- Redis commands for the C tests, written as space-separated words ("SET k v":
 * no spaces inside an argument), made into the arrays rds_batch takes. */
#ifndef SPEC_C_TEST_CMDS_H
#define SPEC_C_TEST_CMDS_H

#include <stdio.h>
#include <string.h>

#define TEST_CMDS_MAX  8
#define TEST_WORDS_MAX 16

struct test_cmds {
    int n;
    char buf[TEST_CMDS_MAX][256];
    const char *words[TEST_CMDS_MAX][TEST_WORDS_MAX];
    size_t lens[TEST_CMDS_MAX][TEST_WORDS_MAX];
    int argc[TEST_CMDS_MAX];
    const char *const *argv[TEST_CMDS_MAX];
    const size_t *argvlen[TEST_CMDS_MAX];
};

/* Split cmds[0..n-1] (at most TEST_CMDS_MAX) into t; t's arrays point into t itself. */
static inline void test_cmds_split(struct test_cmds *t, const char *const *cmds, int n)
{
    t->n = n;
    for (int i = 0; i < n && i < TEST_CMDS_MAX; i++) {
        snprintf(t->buf[i], sizeof t->buf[i], "%s", cmds[i]);
        t->argc[i] = 0;
        for (char *save, *w = strtok_r(t->buf[i], " ", &save); w && t->argc[i] < TEST_WORDS_MAX;
             w = strtok_r(NULL, " ", &save)) {
            t->words[i][t->argc[i]] = w;
            t->lens[i][t->argc[i]++] = strlen(w);
        }
        t->argv[i] = t->words[i];
        t->argvlen[i] = t->lens[i];
    }
}

#endif
