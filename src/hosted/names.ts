// Repository names of the hosted registry: the distribution grammar, at most MAX_NAME_LENGTH characters.
import { isValidRepositoryPath, MAX_NAME_LENGTH } from '../oci/reference.ts';

/** Whether `name` is a distribution repository name. */
export function isRepository(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && isValidRepositoryPath(name);
}
