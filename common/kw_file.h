/*
 * kw_file.h -- durable replacement of a small file: the one way kwal and its
 * tools write a file that a crash must leave either old or new, never torn.
 *
 *   1. write the data to PATH.tmp.<pid> (created 0644, truncated),
 *   2. fsync it,
 *   3. rename it over PATH (atomic on POSIX file systems),
 *   4. fsync PATH's directory, so the rename itself is durable.
 *
 * On any failure the temporary file is removed, PATH is left as it was, and
 * -1 is returned with errno set (errstr, when given, names the file and the
 * step). Readers never see a partial file. Any thread; concurrent writers of
 * one PATH from one process must serialise themselves.
 *
 * The WAL's own small files (its marker and replica state) go through the
 * WAL's I/O table instead (wal_io.c, kw__write_file_atomic), so that its fault
 * injection reaches them; the steps are the same.
 */
#ifndef KW_FILE_H
#define KW_FILE_H

#include <stddef.h>

int kw_file_replace(const char *path, const void *data, size_t len, char *errstr,
                    size_t errlen);

/* mkdir -p: create dir and its missing parents with mode, fsyncing the
 * parent of each directory created, so the new entries are durable. 0 (also
 * when dir exists as a directory), or -1 with errno (ENOTDIR when a part is
 * not a directory). *created (may be NULL) says whether anything was made. */
int kw_file_mkdirs(const char *dir, unsigned mode, int *created);

/* The directory that holds path into dir[len]: "." for a bare name, "/"
 * for a name in the root. Returns the last component (inside path), or NULL
 * with errno ENAMETOOLONG when dir is too small. */
const char *kw_file_parent(const char *path, char *dir, size_t len);

/* fsync the directory that holds path ("." for a bare name): 0 or -1/errno. */
int kw_file_fsync_parent(const char *path);

#endif /* KW_FILE_H */
