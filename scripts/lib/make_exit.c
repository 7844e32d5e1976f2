/* GNU make exits 0, 1 (only under -q) or 2, whatever code a recipe returned: `make resnet` would
 * say 2 for a scored FAIL (1), a busy run dir (3) and a preemption (75) alike. This object, loaded
 * by the Makefile (`load`, GNU make >= 4.0; compiled on first use with cc), gives make the kit's
 * exit codes back:
 *
 *   $(kit-exit CODE,LINE)  print LINE on stderr and exit CODE now (refusals while the Makefile is
 *                          read, before anything is built: one line, no "Makefile:12: ***");
 *   KIT_CODE_FILE          a file (under .make/, named after this make's pid) where a recipe that
 *                          fails writes its code; when make then exits with its own failure 2,
 *                          it exits with that code instead. A make that succeeds keeps 0.
 *
 * Without a C compiler (or on a make without `load`) nothing changes: make exits 2 on any failure.
 * No header needed: the two gnumake.h declarations used are written out below (unchanged since 4.0).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int plugin_is_GPL_compatible;

typedef char *(*gmk_func_ptr)(const char *name, unsigned int argc, char **argv);
extern void gmk_add_function(const char *name, gmk_func_ptr func, unsigned int min_args,
                             unsigned int max_args, unsigned int flags);
extern char *gmk_expand(const char *str);
extern void gmk_eval(const char *buffer, const void *floc);
extern void gmk_free(char *str);

static char code_file[4096];

static char *kit_exit(const char *name, unsigned int argc, char **argv) {
  (void)name;
  fflush(stdout);
  if (argc > 1 && argv[1][0]) fprintf(stderr, "%s\n", argv[1]);
  fflush(stderr);
  exit(atoi(argv[0]));
}

static void keep_recipe_code(int status, void *arg) {
  (void)arg;
  FILE *f = fopen(code_file, "r");
  int code = 0;
  if (!f) return;
  if (fscanf(f, "%d", &code) != 1) code = 0;
  fclose(f);
  unlink(code_file);
  if (status == 2 && code > 0 && code < 256) {
    fflush(stdout);
    fflush(stderr);
    _exit(code);
  }
}

int make_exit_gmk_setup(void) {
  char *dir = gmk_expand("$(CURDIR)");
  char line[4200];
  snprintf(code_file, sizeof code_file, "%s/.make/code.%ld", dir, (long)getpid());
  gmk_free(dir);
  unlink(code_file); /* a killed make of the same pid may have left one */
  snprintf(line, sizeof line, "KIT_CODE_FILE := %s", code_file);
  gmk_eval(line, NULL);
  gmk_add_function("kit-exit", kit_exit, 1, 2, 0);
  on_exit(keep_recipe_code, NULL);
  return 1;
}
