package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// dbFileMode is the mode of the database file and its -wal and -shm files:
// they hold signing keys and live tokens.
const dbFileMode = 0o600

// sidecarSuffixes name the files SQLite keeps next to a WAL-mode database.
var sidecarSuffixes = []string{"-wal", "-shm"}

// prepareFile makes sure path is a database file only its owner can use,
// creating it empty with mode 0600 if it does not exist. It refuses, without
// changing anything, a file other users may access or a directory other
// users may write (they could swap the file). It reports whether it created
// the file.
func prepareFile(path string) (created bool, err error) {
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("%w: database directory %s does not exist; create it (mkdir -m 700 %s) or choose another path", ErrLocation, dir, dir)
		}
		return false, fmt.Errorf("%w: stat database directory %s: %w", ErrLocation, dir, err)
	}
	if !di.IsDir() {
		return false, fmt.Errorf("%w: database directory %s: not a directory", ErrLocation, dir)
	}
	if di.Mode().Perm()&0o022 != 0 {
		return false, fmt.Errorf("%w: database directory %s is writable by group or others (mode %04o); run: chmod go-w %s",
			ErrInsecurePermissions, dir, di.Mode().Perm(), dir)
	}

	// O_EXCL: never adopt a file (or symlink) that appeared since we looked;
	// the file is created with its final mode before SQLite touches it.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, dbFileMode)
	switch {
	case err == nil:
		// The umask may have cleared bits, never added them; chmod anyway
		// so the mode does not depend on it.
		if err := f.Chmod(dbFileMode); err != nil {
			f.Close()
			return true, fmt.Errorf("chmod new database %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return true, fmt.Errorf("create database %s: %w", path, err)
		}
		return true, nil
	case !errors.Is(err, fs.ErrExist):
		return false, fmt.Errorf("create database %s: %w", path, err)
	}

	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("stat database %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%w: %s is not a regular file", ErrNotDatabase, path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return false, fmt.Errorf("%w: database %s is accessible by group or others (mode %04o); run: chmod 600 %s",
			ErrInsecurePermissions, path, fi.Mode().Perm(), path)
	}
	return false, nil
}

// checkHeader refuses a non-empty file that does not start with the SQLite
// header, before any SQLite code opens it. An empty file is a new database.
func checkHeader(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open database %s: %w", path, err)
	}
	defer f.Close()
	header := make([]byte, sqliteHeaderSize)
	n, err := io.ReadFull(f, header)
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s is %d bytes, too short for an SQLite database; it was left untouched, move it away or restore a backup",
			ErrNotDatabase, path, n)
	case err != nil:
		return fmt.Errorf("read database header %s: %w", path, err)
	}
	if string(header[:len(sqliteMagic)]) != sqliteMagic {
		return fmt.Errorf("%w: %s does not start with the SQLite header; it was left untouched, move it away or restore a backup",
			ErrNotDatabase, path)
	}
	return nil
}

// tightenSidecars gives the -wal and -shm files the database file's mode.
// SQLite creates them with the database's mode already; this also repairs
// files left by an older or foreign process.
func tightenSidecars(path string, log *zap.Logger) error {
	for _, suffix := range sidecarSuffixes {
		p := path + suffix
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrInsecurePermissions, p)
		}
		if fi.Mode().Perm() == dbFileMode {
			continue
		}
		if err := os.Chmod(p, dbFileMode); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
		log.Warn("tightened permissions of database sidecar file",
			zap.String("path", p), zap.Stringer("was", fi.Mode().Perm()))
	}
	return nil
}
