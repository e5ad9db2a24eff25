package gatewaycmd

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/sandkey/sandkey/pkg/driver"
	"github.com/sandkey/sandkey/pkg/driver/docker"
	"github.com/sandkey/sandkey/pkg/driver/kubernetes"
	"github.com/sandkey/sandkey/pkg/driver/podman"
	"github.com/sandkey/sandkey/pkg/driver/process"
	"github.com/sandkey/sandkey/pkg/driver/vm"
)

// This file is the one place where compute drivers are registered: the
// gateway core knows only the driver interface. A driver is an entry of
// driverRegistry: its flags and how to build it.

// driverEnv is what every driver's constructor may use.
type driverEnv struct {
	stateDir   string
	supervisor func() (string, error) // the supervisor binary, found lazily
	log        *zap.Logger
}

type driverEntry struct {
	name  string
	flags func(fs *pflag.FlagSet, o *driverOptions)
	build func(env driverEnv, o *driverOptions) (driver.Driver, error)
}

// driverOptions holds every driver's settings; each entry reads its own.
type driverOptions struct {
	enabled     []string
	dockerHost  string
	podmanHost  string
	network     string
	supervisorF string
	vm          vmOptions
	kubernetes  kubernetesOptions
}

var driverRegistry = []driverEntry{
	{
		name: process.Name,
		flags: func(fs *pflag.FlagSet, o *driverOptions) {
			fs.StringVar(&o.supervisorF, "supervisor", "", "supervisor binary the process driver runs and the docker and podman drivers mount, read-only, into images without their own; it must be static for those (default: the one beside this binary, else on PATH)")
		},
		build: func(env driverEnv, o *driverOptions) (driver.Driver, error) {
			path, err := env.supervisor()
			if err != nil {
				return nil, err
			}
			return process.New(process.Config{SupervisorPath: path,
				StateRoot: filepath.Join(env.stateDir, "drivers", process.Name), Logger: env.log.Named(process.Name)})
		},
	},
	{
		name: docker.Name,
		flags: func(fs *pflag.FlagSet, o *driverOptions) {
			fs.StringVar(&o.dockerHost, "docker-host", docker.DefaultHost, "Docker Engine API address for the docker driver")
			fs.StringVar(&o.network, "container-network", "none", "network mode of docker and podman sandboxes (the session needs none)")
		},
		build: func(env driverEnv, o *driverOptions) (driver.Driver, error) {
			sup, err := env.supervisor()
			if err != nil {
				return nil, err
			}
			return docker.New(docker.Config{Host: o.dockerHost, Network: o.network, Supervisor: sup, Logger: env.log.Named(docker.Name)})
		},
	},
	{
		name: podman.Name,
		flags: func(fs *pflag.FlagSet, o *driverOptions) {
			fs.StringVar(&o.podmanHost, "podman-host", podman.DefaultHost, "Podman API address (Docker-compatible) for the podman driver")
		},
		build: func(env driverEnv, o *driverOptions) (driver.Driver, error) {
			sup, err := env.supervisor()
			if err != nil {
				return nil, err
			}
			return podman.New(podman.Config{Host: o.podmanHost, Network: o.network, Supervisor: sup, Logger: env.log.Named(podman.Name)})
		},
	},
	{
		name:  vm.Name,
		flags: func(fs *pflag.FlagSet, o *driverOptions) { addVMFlags(fs, &o.vm) },
		build: func(env driverEnv, o *driverOptions) (driver.Driver, error) { return buildVMDriver(env, &o.vm) },
	},
	{
		name:  kubernetes.Name,
		flags: func(fs *pflag.FlagSet, o *driverOptions) { addKubernetesFlags(fs, &o.kubernetes) },
		build: func(env driverEnv, o *driverOptions) (driver.Driver, error) {
			return buildKubernetesDriver(env, &o.kubernetes)
		},
	},
}

func driverNames() []string {
	names := make([]string, len(driverRegistry))
	for i, e := range driverRegistry {
		names[i] = e.name
	}
	return names
}

func addDriverFlags(fs *pflag.FlagSet, o *driverOptions) {
	fs.StringSliceVar(&o.enabled, "drivers", []string{process.Name}, "drivers to enable, of: "+strings.Join(driverNames(), ", "))
	for _, e := range driverRegistry {
		e.flags(fs, o)
	}
}

// buildDrivers builds every enabled driver. The caller closes them.
func buildDrivers(env driverEnv, o *driverOptions) (map[string]driver.Driver, error) {
	entries, err := enabledDrivers(o)
	if err != nil {
		return nil, err
	}
	out := make(map[string]driver.Driver)
	for _, entry := range entries {
		name := entry.name
		d, err := entry.build(env, o)
		if err != nil {
			closeDrivers(out)
			return nil, usageError{fmt.Errorf("driver %s: %w", name, err)}
		}
		out[name] = d
	}
	return out, nil
}

// enabledDrivers returns the registry entries --drivers names, refusing an
// unknown name before anything is built: a refused start creates nothing.
func enabledDrivers(o *driverOptions) ([]*driverEntry, error) {
	entries := make([]*driverEntry, 0, len(o.enabled))
	for _, name := range o.enabled {
		var entry *driverEntry
		for i := range driverRegistry {
			if driverRegistry[i].name == name {
				entry = &driverRegistry[i]
			}
		}
		if entry == nil {
			return nil, Usagef("--drivers: unknown driver %q (have %s)", name, strings.Join(driverNames(), ", "))
		}
		entries = append(entries, entry)
	}
	return entries, nil
}

func closeDrivers(ds map[string]driver.Driver) {
	names := make([]string, 0, len(ds))
	for n := range ds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if c, ok := ds[n].(interface{ Close() error }); ok {
			c.Close()
		}
	}
}
